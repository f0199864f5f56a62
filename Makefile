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

.PHONY: help setup build demo test test-sol test-js test-py test-web lint typecheck gas bench app clean

help:
	@echo "make demo   run the marketplace demo end to end (local anvil + SQLite)"
	@echo "make test   run every test, lint and type check"
	@echo "make gas    print the contract gas table from real receipts"
	@echo "make bench  run the benchmarks (QUICK=1 for a short run)"
	@echo "make app    local chain + contracts + service + web pages, to try the flow in a browser wallet"
	@echo "make test-web  the web SDK's unit tests and the browser tests (Chromium + anvil)"

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

test: setup build test-sol test-js lint typecheck test-py test-web

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

# The web app: SDK unit tests (tsc strict + node --test), then the pages in Debian's Chromium
# against anvil (Playwright). Only the contract is built: its Solidity tests are not needed here.
CHROMIUM ?= /usr/bin/chromium
test-web: setup
	$(NPM) run --silent build:contracts
	$(NPM) run --silent test:web
	@test -x $(CHROMIUM) || { echo "test-web: no Chromium at $(CHROMIUM): apt-get install -y chromium (see shared TOOLCHAIN.md)" >&2; exit 1; }
	PIECEWORK_CHROMIUM=$(CHROMIUM) $(NPM) run --silent test:browser

app: setup
	$(NPM) run --silent build:contracts
	$(NPM) run --silent build:web
	$(NPM) run --silent app

gas: setup build
	$(NPM) run --silent gas

bench: setup build
	$(PY) scripts/bench.py $(if $(QUICK),--quick,)

clean:
	rm -rf artifacts cache .piecework bench/results build dist web/dist web/test-results
