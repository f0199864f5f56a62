"""The service's runtime objects and the ``Annotated`` dependencies routes declare.

Everything is built once per process by the lifespan (``api.main``) and hung on
``app.state.runtime``; dependencies only look it up. They are ``async def`` on purpose: a sync
dependency would cost a threadpool hop per request on the payment hot path.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.http import HTTPBase
from sqlalchemy.engine import Engine

from api.chainstatus import ChainStatus
from api.problems import ProblemError
from api.schemas import ChannelIdPath
from channel.config import Settings
from channel.errors import AccessDenied, AccessRequired
from channel.messages import Domain
from channel.payee import GroupCommitter, PayeeService, TokenInfo
from channel.store import PayeeStore, WalCheckpointer

if TYPE_CHECKING:  # at run time ``_event_hub`` imports it (one hunk, beside other branches)
    from api.events import EventHub

__all__ = [
    "AcceptedToken",
    "OperatorDep",
    "PayerSideDep",
    "Runtime",
    "RuntimeDep",
    "get_runtime",
]


@dataclass(frozen=True)
class AcceptedToken:
    """A token this service takes (``/v1/info``): read from chain once at start."""

    info: TokenInfo
    min_deposit: int


def _event_hub() -> EventHub:
    from api.events import EventHub  # noqa: PLC0415

    return EventHub()


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
    checkpointer: WalCheckpointer | None = None
    """Checkpoints SQLite's WAL off the commit path (``channel.store.WalCheckpointer``)."""
    events: EventHub = field(default_factory=_event_hub)
    """This process's event stream (``GET /v1/events``)."""
    chain: Any = None
    """The ``ChainClient`` (None in tests without a chain): the watchtower's wallet balance."""
    watcher: Any = None
    """The ``Watcher`` this process would run when it leads (None without a chain)."""
    claim: Callable[[bytes, int, bytes], bytes] | None = None
    """Sends ``claim(channel, cumulative, payer signature)``, returns its tx hash."""
    tokens: tuple[AcceptedToken, ...] = ()
    chain_status: Callable[[], ChainStatus] | None = None
    """Head age and the watcher's lag (``api.chainstatus``); None without a chain client."""
    wallet: Callable[[], dict[str, object] | None] | None = None
    """The hot wallet for /healthz: address, balance (wei, decimal string), low."""


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_bearer = HTTPBearer(
    auto_error=False,
    description="PIECEWORK_OPERATOR_TOKEN; required by operator endpoints, and accepted "
    "wherever an Access signature is.",
)
_access_header = HTTPBase(
    scheme="Access",
    auto_error=False,
    description="`Authorization: Access <expires>.<signature>`: an EIP-712 Access(channelId, "
    "expires) signature by the channel's payer or voucher signer, expiring at most 86,400 s "
    "ahead.",
)
_access_query = APIKeyQuery(
    name="access",
    auto_error=False,
    description="`<expires>.<signature>`, the same Access credential where a header cannot be "
    "set (e.g. EventSource).",
)


def _token_matches(runtime: Runtime, given: str) -> bool:
    token = runtime.settings.operator_token
    if token is None:  # create_app refuses to start without one; never let "" match ""
        return False
    # compare_digest: the comparison time must not reveal how much of the token matched.
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


async def require_operator(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without a bearer token, 403 with a wrong one."""
    if credentials is None:
        raise ProblemError(401, "unauthorized", "this endpoint needs the operator bearer token")
    if not _token_matches(runtime, credentials.credentials):
        raise ProblemError(403, "forbidden", "invalid operator token")


OperatorDep = Annotated[None, Depends(require_operator)]


def require_payer_side(
    channel_id: ChannelIdPath,
    runtime: RuntimeDep,
    header: Annotated[HTTPAuthorizationCredentials | None, Depends(_access_header)],
    query: Annotated[str | None, Depends(_access_query)],
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """The caller is the channel's payer side (an ``Access`` signature) or the operator.

    401 ``access_required`` without credentials; 403 ``access_denied`` for a wrong signer,
    channel, an expired credential or one expiring too far ahead, or a wrong bearer token.
    A plain ``def``: verifying reads the channel and recovers a signature.
    """
    # Both security schemes read the one Authorization header; ``_bearer_doc`` is there so
    # OpenAPI lists the bearer alternative.
    if header is not None and header.scheme.lower() == "bearer":
        if not _token_matches(runtime, header.credentials):
            raise AccessDenied("invalid operator token")
        return
    if header is not None and header.scheme.lower() == "access":
        credential = header.credentials
    elif query is not None:
        credential = query
    else:
        raise AccessRequired(
            "this read is private to the channel's payer side: send "
            "Authorization: Access <expires>.<signature> (or ?access=)"
        )
    runtime.service.check_access(channel_id, credential, int(time.time()))


PayerSideDep = Annotated[None, Depends(require_payer_side)]
