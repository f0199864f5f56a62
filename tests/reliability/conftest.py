"""Fixtures of the reliability suite; the helpers live in ``reliability_harness``."""

from __future__ import annotations

from typing import Any

from reliability_harness import make_service, pg_sqlalchemy_url, supervisor, terminal_summary

__all__ = ["make_service", "pg_sqlalchemy_url", "supervisor"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminal_summary(terminalreporter)
