"""Hand-written Prometheus metrics for the payee service (text exposition format 0.0.4).

prometheus_client is not a dependency, and the service needs three counters and one
histogram; a lock-protected dict per metric is all that takes. Values are per process: with
several uvicorn workers each worker exposes its own (scrape each, or sum in Prometheus).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable
from typing import Final

__all__ = ["Metrics"]

# Seconds; the payment hot path aims at p99 <= 50 ms, so resolution is finest below that.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Payments accepted/rejected, a payment latency histogram, and gauges read on scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected: dict[str, int] = {}
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def payment_accepted(self, seconds: float) -> None:
        """A receipt was returned (a new payment or an idempotent repeat of one)."""
        with self._lock:
            self.accepted += 1
            self._observe(seconds)

    def payment_rejected(self, code: str, seconds: float) -> None:
        with self._lock:
            self.rejected[code] = self.rejected.get(code, 0) + 1
            self._observe(seconds)

    def _observe(self, seconds: float) -> None:
        self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds
        self._latency_count += 1

    def render(self, unclaimed: Callable[[], Iterable[tuple[str, int]]] | None = None) -> str:
        """The exposition text; ``unclaimed`` yields ``(token, amount)`` read at scrape time."""
        with self._lock:
            accepted = self.accepted
            rejected = sorted(self.rejected.items())
            buckets = list(self._bucket_counts)
            total, count = self._latency_sum, self._latency_count
        lines = [
            "# HELP piecework_payments_accepted_total Payments answered with a receipt.",
            "# TYPE piecework_payments_accepted_total counter",
            f"piecework_payments_accepted_total {accepted}",
            "# HELP piecework_payments_rejected_total Payments rejected, by problem code.",
            "# TYPE piecework_payments_rejected_total counter",
        ]
        lines += [
            f'piecework_payments_rejected_total{{code="{_escape(c)}"}} {n}' for c, n in rejected
        ]
        lines += [
            "# HELP piecework_payment_seconds Time to answer POST /payments.",
            "# TYPE piecework_payment_seconds histogram",
        ]
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'piecework_payment_seconds_bucket{{le="{le}"}} {running}')
        lines += [
            f"piecework_payment_seconds_sum {total!r}",
            f"piecework_payment_seconds_count {count}",
        ]
        if unclaimed is not None:
            lines += [
                "# HELP piecework_unclaimed_amount Accepted but not yet claimed on chain, by token "
                "(0x00..00 is ETH), in base units.",
                "# TYPE piecework_unclaimed_amount gauge",
            ]
            lines += [
                f'piecework_unclaimed_amount{{token="{_escape(t)}"}} {amount}'
                for t, amount in unclaimed()
            ]
        return "\n".join(lines) + "\n"
