"""Fixtures of the api tests; the helpers they share live in ``api_support`` (importable by name
from any test module, unlike a conftest, whose module name clashes across test folders)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import Twin, settings_for
from fastapi.testclient import TestClient

from api.main import Overrides, create_app
from channel.payee import InMemoryChannelSource


@pytest.fixture
def make_twin(tmp_path: Path) -> Iterator[Callable[..., Twin]]:
    """``make_twin(db_url=None, **settings)`` → a started Twin (closed at teardown)."""
    stack = contextlib.ExitStack()

    def make(db_url: str | None = None, *, node_check: Callable[[], None] | None = None,
             group_commit: bool | None = None, **extra: Any) -> Twin:
        source = InMemoryChannelSource()
        url = db_url or f"sqlite:///{tmp_path / 'twin.db'}"
        overrides = Overrides(source=source, node_check=node_check, group_commit=group_commit)
        app = create_app(settings_for(url, **extra), overrides)
        client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
        return Twin(client, source)

    with stack:
        yield make


@pytest.fixture
def twin(make_twin: Callable[..., Twin]) -> Twin:
    return make_twin()
