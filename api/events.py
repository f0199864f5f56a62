"""In-process pub/sub behind ``GET /v1/events`` (web/SERVICE-NEEDS.md item 5).

One ``EventHub`` per process. Publishers call ``publish(name, data)`` from any thread (the
payment route after a payment is durably committed, the task route, the mirror follower below);
each subscriber is an ``asyncio.Queue`` on the server's event loop, fed with
``call_soon_threadsafe``. Every event gets an increasing integer id; the hub keeps the last
``backlog`` events so a reconnecting stream can resume after ``Last-Event-ID``.

Several workers: each process has its own hub, so a worker's stream carries the payments that
worker accepted; chain changes reach every worker because ``MirrorFollower`` reads the store's
channel mirror (written by whichever worker leads the watcher) rather than hooking the watcher.
A dashboard that must see every payment runs the service with one worker, or reconnects
(the ``snapshot`` carries every channel's accepted amount).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "EventHub", "Subscription"]

log = logging.getLogger(__name__)

EVENT_NAMES = frozenset({"snapshot", "payment", "task", "channel", "watchtower"})


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    name: str
    data: dict[str, Any]

    def encode(self) -> bytes:
        """The SSE wire form: ``id``, ``event`` and one ``data`` line of compact JSON."""
        payload = json.dumps(self.data, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.name}\ndata: {payload}\n\n".encode()


class Subscription:
    """One stream's queue; ``overflowed`` is set when it fell too far behind (then it ends)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.overflowed = False

    def _put(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


class EventHub:
    """Thread-safe fan-out of events to the streams of this process."""

    def __init__(self, *, backlog: int = 1000, queue_size: int = 1000) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._recent: collections.deque[Event] = collections.deque(maxlen=backlog)
        self._subscribers: set[Subscription] = set()
        self._queue_size = queue_size
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, name: str, data: dict[str, Any]) -> Event:
        """Number the event, remember it, and hand it to every stream (never raises)."""
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event name {name!r}")
        with self._lock:
            event = Event(next(self._ids), name, data)
            self._recent.append(event)
            subscribers = list(self._subscribers)
            listeners = list(self._listeners)
        for sub in subscribers:
            try:
                sub.loop.call_soon_threadsafe(sub._put, event)
            except RuntimeError:  # the loop is closed: the stream is gone
                self.unsubscribe(sub)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener must never break a publisher (a payment)
                log.exception("event listener failed")
        return event

    def listen(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously for every event (tests, telemetry)."""
        with self._lock:
            self._listeners.append(listener)

    def subscribe(self, after: int | None = None) -> tuple[Subscription, list[Event] | None]:
        """A new stream on the running loop, and the remembered events after ``after``.

        The second value is None when ``after`` is not given or is older than the backlog:
        the stream must then start with a snapshot.
        """
        sub = Subscription(asyncio.get_running_loop(), self._queue_size)
        with self._lock:
            self._subscribers.add(sub)
            if after is None:
                return sub, None
            recent = list(self._recent)
        if recent and recent[0].id > after + 1:
            return sub, None  # some events after ``after`` were dropped from the backlog
        if after > (recent[-1].id if recent else 0):
            return sub, None  # an id this process never issued (another worker, a restart)
        return sub, [e for e in recent if e.id > after]

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def next_id(self) -> int:
        """An id for an event sent to one stream only (its snapshot), ordered with the rest."""
        with self._lock:
            return next(self._ids)
