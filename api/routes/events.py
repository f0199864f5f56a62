"""GET /v1/events (operator Server-Sent Events) and GET /v1/watchtower (web/SERVICE-NEEDS.md 5).

The stream starts with a ``snapshot`` (every channel and the watchtower) unless
``Last-Event-ID`` names an event this process still remembers; then ``payment``, ``task``,
``channel`` and ``watchtower`` events as they happen, and a ``: keepalive`` comment every 15 s.
The bearer token travels in the ``Authorization`` header (the dashboard reads the stream with
``fetch``), never in the URL.

``MirrorFollower`` runs in every worker while someone streams: it turns rows of the store's
channel mirror changed since its last look into ``channel`` events (whichever worker's watcher
wrote them, and channels the API fetched on first sight), and publishes the watchtower when it
changes and at least every 60 s. Payments come from the worker that accepted them
(``publish_payment``), see ``api.events``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Final

import sqlalchemy as sa
from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.deps import OperatorDep, Runtime, RuntimeDep
from api.events import EVENT_NAMES, Event, EventHub
from api.routes.channels import _view
from api.routes.tasks import task_body
from api.schemas import problem_docs
from api.watchtower import watchtower_state
from channel.payee import SignedReceipt
from channel.store import ChannelRow, _state_from_row

__all__ = ["MirrorFollower", "publish_payment", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["events"])

KEEPALIVE_SECONDS: Final = 15.0
WATCHTOWER_EVERY: Final = 60.0
_channels = ChannelRow.__table__  # type: ignore[attr-defined]


def _channel_json(runtime: Runtime, row: Any) -> dict[str, Any]:
    return _view(_state_from_row(row)).model_dump(mode="json")


def snapshot(runtime: Runtime) -> dict[str, Any]:
    """Every channel of our payees (the operator list's shape) and the watchtower."""
    query = sa.select(_channels).where(_channels.c.payee.in_(runtime.payees)).order_by(
        _channels.c.channel_id)
    with runtime.engine.connect() as conn:
        channels = [_channel_json(runtime, r) for r in conn.execute(query)]
    return {"channels": channels, "watchtower": watchtower_state(runtime)}


def publish_payment(runtime: Runtime, task_id: str, receipt: SignedReceipt, at: int) -> None:
    """The ``payment`` event, published once the payment is durably committed; and, while
    someone streams, the ``task`` event of the requested task it paid (looked up off the
    event loop, so the payment's answer never waits for it)."""
    runtime.events.publish("payment", {
        "channel_id": "0x" + receipt.channel_id.hex(),
        "task_id": task_id,
        "task_hash": "0x" + receipt.task_id.hex(),
        "amount": str(receipt.amount),
        "cumulative_amount": str(receipt.cumulative_amount),
        "created_at": at,
    })
    if runtime.events.subscribers:
        _executor.submit(_publish_paid_task, runtime, receipt.channel_id, receipt.task_id)


# One thread: paid-task lookups queue up behind each other instead of competing with payments
# for the threadpool.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piecework-events")


def _publish_paid_task(runtime: Runtime, channel_id: bytes, task_hash: bytes) -> None:
    try:
        task = next((t for t in runtime.store.tasks(channel_id, "paid")
                     if t.task_hash == task_hash), None)
        if task is not None:
            runtime.events.publish("task", {"channel_id": "0x" + channel_id.hex(),
                                            "task": task_body(task).model_dump(mode="json")})
    except Exception:  # an event is a courtesy: never let it surface anywhere
        log.exception("could not publish the paid task's event")


class MirrorFollower:
    """Polls the store's channel mirror while streams are open (one query a second)."""

    def __init__(self, runtime: Runtime, *, interval: float = 1.0,
                 watchtower_interval: float = 5.0) -> None:
        self.runtime = runtime
        self.interval = interval
        self.watchtower_interval = watchtower_interval
        self._seen: dict[str, float] = {}
        self._since = time.time()
        self._watchtower: dict[str, Any] | None = None
        self._checked_at = 0.0
        self._published_at = 0.0

    def changed_channels(self) -> list[dict[str, Any]]:
        """Channels whose mirror row changed since the last call (ours only)."""
        # Rows written by another process with a slightly earlier clock still show up: look
        # back a few seconds and skip what was already published.
        query = sa.select(_channels).where(
            _channels.c.payee.in_(self.runtime.payees),
            _channels.c.updated_at > self._since - 5.0,
        )
        out = []
        with self.runtime.engine.connect() as conn:
            for row in conn.execute(query):
                cid, updated = str(row.channel_id), float(row.updated_at)
                if self._seen.get(cid) == updated:
                    continue
                self._seen[cid] = updated
                self._since = max(self._since, updated)
                out.append(_channel_json(self.runtime, row))
        return out

    def poll(self, now: float) -> None:
        """One look: ``channel`` events, and the watchtower when due and changed (or 60 s)."""
        for channel in self.changed_channels():
            self.runtime.events.publish("channel", channel)
        if self._watchtower is not None and now - self._checked_at < self.watchtower_interval:
            return
        state = watchtower_state(self.runtime)
        self._checked_at = now
        if state != self._watchtower or now - self._published_at >= WATCHTOWER_EVERY:
            self._watchtower, self._published_at = state, now
            self.runtime.events.publish("watchtower", state)

    async def run(self) -> None:
        """Until cancelled; idle (no query) while nobody streams."""
        while True:
            await asyncio.sleep(self.interval)
            if self.runtime.events.subscribers == 0:
                continue
            try:
                await run_in_threadpool(self.poll, time.time())
            except Exception:  # a failed look must not end the stream for everyone
                log.exception("event mirror follower failed; retrying")


async def _stream(runtime: Runtime, after: int | None) -> AsyncIterator[bytes]:
    hub: EventHub = runtime.events
    sub, backlog = hub.subscribe(after)
    try:
        if backlog is None:
            data = await run_in_threadpool(snapshot, runtime)
            yield Event(hub.next_id(), "snapshot", data).encode()
        else:
            for event in backlog:
                yield event.encode()
        while not sub.overflowed:
            try:
                event = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            yield event.encode()
        # Too far behind to be told everything: end, the client reconnects and gets a snapshot.
    finally:
        hub.unsubscribe(sub)


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


_EVENT_ID: Final = re.compile(r"[0-9]{1,19}")


@router.get(
    "/events",
    response_class=EventStreamResponse,
    responses={200: {
        "description": "snapshot, then payment/task/channel/watchtower events",
        "content": {"text/event-stream": {"schema": {
            "description": "One Server-Sent Event: its name, an increasing id, and one line "
                           "of JSON (web/SERVICE-NEEDS.md item 5).",
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "enum": sorted(EVENT_NAMES)},
                "id": {"type": "string", "pattern": "^[0-9]+$"},
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
        }}},
    }, **problem_docs(401, 403)},
    summary="Live events for the dashboard (operator, Server-Sent Events)",
)
async def events(
    runtime: RuntimeDep,
    _: OperatorDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> StreamingResponse:
    """Payments as they are committed (by this worker), task requests, chain changes of the
    channel mirror and the watchtower's state; ``Last-Event-ID`` resumes when it can."""
    after = int(last_event_id) if last_event_id and _EVENT_ID.fullmatch(last_event_id) else None
    return EventStreamResponse(
        _stream(runtime, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


_WATCHTOWER_EXAMPLE: Final = {
    "closing": [{"channel_id": "0x" + "ab" * 32, "closes_at": 1764493600, "defended": True,
                 "tx_hash": "0x" + "cd" * 32}],
    "defences": [{"channel_id": "0x" + "ab" * 32, "tx_hash": "0x" + "cd" * 32,
                  "at": 1764490100}],
    "warnings": [{"kind": "low_balance", "message": "The service's wallet 0x… holds 0.004 ETH; "
                  "claims and defences need about 0.01 ETH."}],
    "wallet": {"address": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
               "balance": "4000000000000000", "needed": "10000000000000000"},
}


@router.get(
    "/watchtower",
    responses={200: {"description": "The watchtower's state (api.watchtower)",
                     "content": {"application/json": {"example": _WATCHTOWER_EXAMPLE}}},
               **problem_docs(401, 403)},
    summary="Closing channels, defences sent, wallet balance warnings (operator)",
)
def watchtower(runtime: RuntimeDep, _: OperatorDep) -> JSONResponse:
    """The same object as the stream's ``watchtower`` event."""
    return JSONResponse(watchtower_state(runtime), headers={"Cache-Control": "no-store"})


@contextlib.asynccontextmanager
async def following(runtime: Runtime) -> AsyncIterator[MirrorFollower]:
    """Run a ``MirrorFollower`` for the app's lifetime (the lifespan enters this)."""
    follower = MirrorFollower(runtime)
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
