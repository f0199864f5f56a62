"""The in-process event hub behind GET /v1/events: ids, resuming, slow streams, threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from api.events import EventHub


def test_resume_returns_what_came_after_or_asks_for_a_snapshot() -> None:
    async def scenario() -> None:
        hub = EventHub(backlog=3)
        ids = [hub.publish("payment", {"n": i}).id for i in range(5)]
        assert ids == [1, 2, 3, 4, 5]
        sub, backlog = hub.subscribe(after=3)
        assert backlog is not None and [e.data["n"] for e in backlog] == [3, 4]
        hub.unsubscribe(sub)
        # Event 2 fell out of the backlog (3 kept): a resume after 1 cannot be complete.
        _, dropped = hub.subscribe(after=1)
        assert dropped is None
        _, unknown = hub.subscribe(after=99)  # another worker's or an older process's id
        assert unknown is None
        _, fresh = hub.subscribe()
        assert fresh is None
        assert hub.subscribers == 3

    asyncio.run(scenario())


def test_events_from_other_threads_reach_the_stream_in_order() -> None:
    async def scenario() -> list[int]:
        hub = EventHub()
        sub, _ = hub.subscribe()
        threads = [threading.Thread(target=lambda: [hub.publish("channel", {}) for _ in range(50)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = [(await asyncio.wait_for(sub.queue.get(), 5)).id for _ in range(200)]
        return got

    got = asyncio.run(scenario())
    assert sorted(got) == list(range(1, 201))


def test_a_stream_that_falls_behind_is_marked_overflowed_not_blocking_publishers() -> None:
    async def scenario() -> None:
        hub = EventHub(queue_size=2)
        sub, _ = hub.subscribe()
        for _ in range(5):
            hub.publish("payment", {})
        await asyncio.sleep(0)  # let call_soon_threadsafe deliver
        assert sub.overflowed and sub.queue.qsize() == 2

    asyncio.run(scenario())


def test_unknown_event_names_are_refused_and_listener_errors_contained() -> None:
    hub = EventHub()
    with pytest.raises(ValueError, match="unknown event name"):
        hub.publish("payments", {})
    seen: list[str] = []
    hub.listen(lambda e: (_ for _ in ()).throw(RuntimeError("boom")))
    hub.listen(lambda e: seen.append(e.name))
    hub.publish("task", {})
    assert seen == ["task"]
