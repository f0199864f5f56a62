"""The service's runtime objects and the ``Annotated`` dependencies routes declare.

Everything is built once per process by the lifespan (``api.main``) and hung on
``app.state.runtime``; dependencies only look it up. They are ``async def`` on purpose: a sync
dependency would cost a threadpool hop per request on the payment hot path.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from api.problems import ProblemError
from channel.config import Settings
from channel.messages import Domain
from channel.payee import GroupCommitter, PayeeService
from channel.store import PayeeStore

__all__ = [
    "OperatorDep",
    "OptionalOperatorDep",
    "Runtime",
    "RuntimeDep",
    "get_runtime",
]


@dataclass
class Runtime:
    """One process's service objects; ``node_check`` raises ``ChainError`` when the node is down."""

    settings: Settings
    engine: Engine
    store: PayeeStore
    service: PayeeService
    domain: Domain
    payees: tuple[str, ...]
    node_check: Callable[[], None]
    committer: GroupCommitter | None = None
    claim: Callable[[bytes, int, bytes], bytes] | None = None
    """Sends ``claim(channel, cumulative, payer signature)``, returns its tx hash."""


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(
    auto_error=False,
    description="PIECEWORK_OPERATOR_TOKEN; required by operator endpoints.",
)


def _token_matches(runtime: Runtime, given: str) -> bool:
    token = runtime.settings.operator_token
    if token is None:  # create_app refuses to start without one; never let "" match ""
        return False
    # compare_digest: the comparison time must not reveal how much of the token matched.
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


async def optional_operator(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> bool:
    """True with a valid operator token, False without one; a wrong token is a 401."""
    if credentials is None:
        return False
    if not _token_matches(runtime, credentials.credentials):
        raise ProblemError(401, "unauthorized", "invalid operator token")
    return True


async def require_operator(is_operator: Annotated[bool, Depends(optional_operator)]) -> None:
    if not is_operator:
        raise ProblemError(401, "unauthorized", "this endpoint needs the operator bearer token")


OperatorDep = Annotated[None, Depends(require_operator)]
OptionalOperatorDep = Annotated[bool, Depends(optional_operator)]
