"""Request guards that run before routing: body size limit (413) and JSON-only bodies (415).

A pure ASGI middleware (not ``BaseHTTPMiddleware``) so the payment hot path pays one dict
lookup, not an extra task and stream copy per request. Limits are enforced on the declared
``Content-Length`` and again on the bytes actually received, so a chunked or lying client
cannot stream past the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

__all__ = ["RequestGuard"]


class _TooLarge(HTTPException):
    """Raised from ``receive`` mid-stream; an HTTPException so FastAPI's body reader re-raises
    it as is (other errors become a 400) and the problem handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class RequestGuard:
    """Rejects bodies over ``max_body_bytes`` with 413 and non-JSON bodies with 415."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        content_type = b""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and (length < 0 or length > self.max_body_bytes):
            if length < 0:
                await problem_response(400, "bad_request", "invalid Content-Length")(
                    scope, receive, send
                )
                return
            await self._too_large(scope, receive, send)
            return
        has_body = chunked or bool(length)
        if has_body and not _is_json(content_type):
            await problem_response(
                415,
                "unsupported_media_type",
                "request bodies must be application/json",
            )(scope, receive, send)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem_response(
            413,
            "payload_too_large",
            f"request body exceeds {self.max_body_bytes} bytes",
            max_body_bytes=self.max_body_bytes,
        )(scope, receive, send)
