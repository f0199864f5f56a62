"""CORS for the payer-side endpoints only (web/SERVICE-NEEDS.md item 6).

``PIECEWORK_CORS_ORIGINS`` lists exact origins (default none: same origin only, no CORS header
at all; ``*`` is refused at start-up by the settings). A page on a listed origin may call the
endpoints a client page needs, and reads their errors too (problem+json ``code``):

    GET /v1/info                        GET  /v1/channels/{id}
    POST /v1/channels/{id}/payments     POST /v1/channels/{id}/close
    GET /v1/channels/{id}/tasks         GET  /v1/channels/{id}/receipts

Operator endpoints (the channel list, task requests, claims, events, watchtower, metrics,
health) never answer CORS, whatever the setting, and a preflight to them gets no CORS header.
Never ``Access-Control-Allow-Credentials``: auth is the explicit ``Access`` header.

A pure ASGI middleware installed outermost, so errors answered by inner middleware (413, 415)
and handlers carry the headers too.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PayerSideCors", "payer_side_methods"]

_CHANNEL: Final = r"/v1/channels/0x[0-9a-fA-F]{64}"
_PAYER_SIDE: Final = (
    (re.compile(r"/v1/info"), frozenset({"GET"})),
    (re.compile(_CHANNEL), frozenset({"GET"})),
    (re.compile(_CHANNEL + r"/payments"), frozenset({"POST"})),
    (re.compile(_CHANNEL + r"/close"), frozenset({"POST"})),
    (re.compile(_CHANNEL + r"/tasks"), frozenset({"GET"})),
    (re.compile(_CHANNEL + r"/receipts"), frozenset({"GET"})),
)


def payer_side_methods(path: str) -> frozenset[str]:
    """The methods a cross-origin page may use on ``path`` (empty: none, operator or unknown)."""
    for pattern, methods in _PAYER_SIDE:
        if pattern.fullmatch(path):
            return methods
    return frozenset()


class PayerSideCors:
    """Answers CORS for ``origins`` on the payer-side endpoints; nothing anywhere else."""

    def __init__(self, app: ASGIApp, *, origins: frozenset[str]) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        methods = payer_side_methods(scope["path"])
        if not methods:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin is not None and origin.lower() in self.origins
        requested = headers.get("access-control-request-method")
        if scope["method"] == "OPTIONS" and requested is not None:
            if allowed and requested.upper() in methods:
                await self._preflight(origin or "", send)
                return
            await self.app(scope, receive, send)  # the app's own 405, without CORS headers
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.add_vary_header("Origin")
                if allowed and scope["method"] in methods | {"HEAD"}:
                    out["Access-Control-Allow-Origin"] = origin or ""
                    out["Access-Control-Expose-Headers"] = "Retry-After"
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def _preflight(origin: str, send: Send) -> None:
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"GET, POST"),
            (b"access-control-allow-headers", b"authorization, content-type"),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
