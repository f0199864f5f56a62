"""POST /v1/channels/{channelId}/payments: the hot path (one voucher in, one receipt out).

Two doors, one decision. ``LeanPayments`` is a pure ASGI layer in front of FastAPI that answers
a well-formed payment itself: it validates the body with the same pydantic model
(``NewPayment``, strict, extra fields forbidden) and the path with the same limit, awaits
``accept`` below and writes the 201 or the problem+json (``api.problems.to_problem``, the very
function FastAPI's handlers use). Anything it does not fully recognise (another path or method,
a body or path that fails validation, no runtime yet) goes on to FastAPI unchanged, body
replayed, so malformed input gets exactly the answer the declared route gives; the FastAPI
route below stays for those answers and for the OpenAPI document. Measured in the same run as
the route alone (scripts/bench_http.py): see the commit that added it.

``accept`` is the ONE place where a payment is durably accepted: it returns only after the
group commit (or the single commit) is on disk, and both doors go through it. A hook that must
see every accepted payment (SSE publish, ...) belongs there, after the await, and nowhere else.

With group commit (the default) the payment is a coroutine awaiting the committer's future on
the event loop: no threadpool hop per payment, and in-flight payments are not capped by the
threadpool's size. Without the committer the synchronous store call runs in the threadpool so
it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Final

from fastapi import APIRouter, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import telemetry
from api.deps import Runtime, RuntimeDep
from api.problems import to_problem
from api.routes.events import publish_payment
from api.schemas import ChannelIdPath, NewPayment, PaymentCreated, problem_docs
from channel.errors import PieceworkError
from channel.payee import PaymentRequest, SignedReceipt

__all__ = ["LeanPayments", "accept", "router"]

router = APIRouter(prefix="/v1/channels", tags=["payments"])

# The path parameter's own limit (``ChannelIdPath``: max_length=80); longer ids go to FastAPI,
# which answers its 422.
_PAYMENT_PATH: Final = re.compile(r"/v1/channels/([^/]{1,80})/payments")


def _accept_sync(runtime: Runtime, r: PaymentRequest) -> SignedReceipt:
    return runtime.service.accept(
        r.channel_id, r.task_id, r.amount, r.cumulative_amount, r.signature, r.now
    )


async def accept(runtime: Runtime, channel_id: str, body: NewPayment) -> SignedReceipt:
    """Accept one payment; returns the receipt once the payment is durably committed.

    Raises the service's ``PieceworkError``s (counted in the metrics). The single place where
    a payment is durably accepted: put anything that must follow every acceptance after the
    await below.
    """
    started = time.perf_counter()
    request = PaymentRequest(
        channel_id, body.task_id, body.amount, body.cumulative_amount, body.signature,
        int(time.time()),
    )
    try:
        receipt: SignedReceipt
        if runtime.committer is not None:
            receipt = await asyncio.wrap_future(runtime.committer.submit(request))
        else:
            receipt = await run_in_threadpool(_accept_sync, runtime, request)
    except PieceworkError as exc:
        telemetry.PAYMENTS_REJECTED.labels(exc.code).inc()
        telemetry.PAYMENT_SECONDS.observe(time.perf_counter() - started)
        raise
    # Durably accepted from here on (committed, fsynced).
    telemetry.PAYMENTS_ACCEPTED.inc()
    telemetry.PAYMENT_SECONDS.observe(time.perf_counter() - started)
    # Tell this worker's event streams (the dashboard); cheap without subscribers.
    publish_payment(runtime, body.task_id, receipt, request.now)
    return receipt


def _created_body(receipt: SignedReceipt) -> bytes:
    return json.dumps({"receipt": receipt.as_json()}, separators=(",", ":")).encode()


@router.post(
    "/{channel_id}/payments",
    status_code=201,
    response_model=PaymentCreated,
    responses=problem_docs(404, 409, 413, 415, 422, 503),
    summary="Pay for one task with a voucher",
)
async def create_payment(
    channel_id: ChannelIdPath, body: NewPayment, runtime: RuntimeDep
) -> Response:
    """Accept the voucher and answer with the payee's signed receipt once it is committed.

    ``cumulative_amount`` must equal the latest accepted amount plus ``amount``. Sending the
    same task with the same voucher again returns the same receipt, again with 201
    (idempotent, so a client may retry after a timeout). A stale or racing voucher gets 409
    ``stale_voucher`` with ``current_cumulative_amount``; a voucher above the deposit gets 422
    ``exceeds_deposit``; an unknown channel 404; a node that cannot be reached for a channel
    not seen before 503.
    """
    receipt = await accept(runtime, channel_id, body)
    return Response(content=_created_body(receipt), status_code=201,
                    media_type="application/json")


class LeanPayments:
    """Answers well-formed ``POST /v1/channels/{id}/payments`` without FastAPI's per-request
    layers (routing over every route, dependency solving, request/response objects); every
    other request, and every payment it cannot validate, passes to ``app`` unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = _PAYMENT_PATH.fullmatch(scope["path"])
        runtime: Runtime | None = getattr(scope["app"].state, "runtime", None)
        if match is None or runtime is None or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        chunks = []
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # disconnected: nothing to answer
                    return
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except Exception as exc:  # e.g. RequestGuard's 413 mid-stream
            await to_problem(exc)(scope, receive, send)
            return
        raw = b"".join(chunks)
        try:
            body = NewPayment.model_validate_json(raw, strict=True)
        except (ValidationError, ValueError):
            await self.app(scope, _replay(raw, receive), send)
            return
        try:
            receipt = await accept(runtime, match.group(1), body)
        except Exception as exc:  # every error leaves as problem+json
            await to_problem(exc)(scope, receive, send)
            return
        content = _created_body(receipt)
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ]})
        await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body over once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
