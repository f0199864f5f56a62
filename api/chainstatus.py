"""How fresh the node is and how far the watcher's mirror lags it (``/healthz``, ``/metrics``).

A node that stalls still answers ``eth_blockNumber``; only the age of its latest block shows it.
The watcher's lag is measured against its persisted cursor (shared by every worker through the
database), in blocks and in block time: a lag longer than ``PIECEWORK_CLOSING_MARGIN`` means a
payer's close could be noticed too late to defend within that margin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from channel.errors import PieceworkError
from channel.store import PayeeStore

__all__ = ["ChainStatus", "ChainStatusMetrics", "read_status"]


@dataclass(frozen=True)
class ChainStatus:
    head: int
    head_age: float
    """Seconds between now and the latest block's timestamp."""
    mirror: int | None = None
    """The watcher's cursor (last block followed), None before its first poll."""
    lag_blocks: int | None = None
    lag_seconds: int | None = None
    """Block time between the cursor's block and the latest block."""


def read_status(chain: Any, store: PayeeStore, cursor_name: str = "watcher",
                now: Callable[[], float] = time.time) -> ChainStatus:
    """Read the latest block and the watcher cursor; ``ChainError`` when the node is down."""
    latest = chain.block("latest")
    head, stamp = int(latest["number"]), int(latest["timestamp"])
    age = max(0.0, now() - stamp)
    cursor = store.cursor(cursor_name)
    if cursor is None:
        return ChainStatus(head, age)
    mirror = cursor[0]
    behind = max(0, head - mirror)
    lag_seconds = 0 if behind == 0 else max(0, stamp - int(chain.timestamp(mirror)))
    return ChainStatus(head, age, mirror, behind, lag_seconds)


class ChainStatusMetrics:
    """``piecework_head_age_seconds``, ``piecework_mirror_lag_blocks`` and
    ``piecework_mirror_lag_seconds`` (absent while the node is down or before the first poll)."""

    def __init__(self, status: Callable[[], ChainStatus] | None) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        if self._status is None:
            return
        try:
            st = self._status()
        except PieceworkError:
            return
        yield GaugeMetricFamily("piecework_head_age_seconds",
                                "Seconds since the node's latest block was made.", st.head_age)
        yield GaugeMetricFamily("piecework_head_block", "The node's latest block.", st.head)
        if st.lag_blocks is not None and st.lag_seconds is not None:
            yield GaugeMetricFamily("piecework_mirror_lag_blocks",
                                    "Blocks between the node's head and the watcher's cursor.",
                                    st.lag_blocks)
            yield GaugeMetricFamily("piecework_mirror_lag_seconds",
                                    "Block time between the watcher's cursor and the head.",
                                    st.lag_seconds)
