"""Fixtures of the integration suite (the shared node and databases are in tests/conftest.py)."""

from payee_twin import payee_twin

__all__ = ["payee_twin"]
