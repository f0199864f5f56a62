# Piecework: two commands on a fresh machine (Python 3.11, Node 20, npm):
#   make demo   the whole marketplace flow end to end on a local anvil chain and SQLite
#   make test   every test: Solidity (unit, fuzz, invariant), JS interop, Python, ruff, mypy
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# npm scripts put node_modules/.bin (with Node 22 from the `node` package) first on PATH.
NPM := npm

.PHONY: help setup build demo test test-sol test-js test-py lint typecheck gas bench clean

help:
	@echo "make demo   run the marketplace demo end to end (local anvil + SQLite)"
	@echo "make test   run every test, lint and type check"
	@echo "make gas    print the contract gas table from real receipts"
	@echo "make bench  run the benchmarks (QUICK=1 for a short run)"

# Stamps make set-up idempotent and re-run it only when the lock files change.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip 2>/dev/null
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@

node_modules/.installed: package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: $(VENV)/.installed node_modules/.installed

build: node_modules/.installed
	$(NPM) run --silent build

demo: setup build
	$(PY) scripts/demo.py

test: setup build test-sol test-js lint typecheck test-py

test-sol:
	$(NPM) test

test-js:
	$(NPM) run --silent test:interop

lint:
	$(VENV)/bin/ruff check channel api tests scripts

typecheck:
	$(VENV)/bin/mypy

test-py:
	$(VENV)/bin/pytest -q -ra

gas: setup build
	$(NPM) run --silent gas

bench: setup build
	$(PY) scripts/bench.py $(if $(QUICK),--quick,)

clean:
	rm -rf artifacts cache .piecework bench/results build dist
