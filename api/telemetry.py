"""The payee service's Prometheus metrics: the metric objects, and what one scrape exposes.

Recording: the metrics are module-level prometheus_client objects; update them where the event
happens, e.g. ``telemetry.PAYMENTS_ACCEPTED.inc()``. To add one, define it here next to the
others (name ``piecework_*``, base units, a help text), so the whole set reads in one place::

    CLAIMS_SENT = Counter("piecework_claims_sent", "Claim transactions sent.", ["kind"])
    ...
    telemetry.CLAIMS_SENT.labels("claimMany").inc()

Several workers: ``piecework serve --workers N`` with N > 1 points ``PROMETHEUS_MULTIPROC_DIR``
at a private temporary directory before the workers start (and removes it at exit); each
worker's updates then go to memory-mapped files there, and a scrape of any worker sums every
worker's counters and histograms. (Started by uvicorn or gunicorn directly with several workers,
the service needs that variable set to a fresh empty directory by whoever starts it; without it
each worker answers with its own counts.) prometheus_client's rules for that mode apply to new
metrics: a ``Gauge`` needs ``multiprocess_mode`` ("livesum", "max", ...), and
``Gauge.set_function``, ``Info`` and ``Enum`` do not work. A value read from the database at
scrape time (the same whichever worker reads it) is a collector passed to :func:`exposition`,
like :class:`UnclaimedAmounts`.

Process metrics: with one process, prometheus_client's process, platform and GC collectors.
With several workers, ``process_*`` of every live worker labelled ``pid`` (read from /proc, as
one process cannot read another's counters) and ``python_info``; other workers' GC statistics
cannot be read, so ``python_gc_*`` is left out there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Final, Protocol

import prometheus_client
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROCESS_DIR",
    "PAYMENTS_ACCEPTED",
    "PAYMENTS_REJECTED",
    "PAYMENT_SECONDS",
    "WALLET_BALANCE",
    "WALLET_LOW",
    "WATCHTOWER_ALERTS",
    "UnclaimedAmounts",
    "exposition",
]

# prometheus_client chooses memory-mapped storage when it is imported with this set.
MULTIPROCESS_DIR: Final = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

# The text format is the 0.0.4 one (legacy metric names, underscores escaping).
CONTENT_TYPE: Final = prometheus_client.exposition.CONTENT_TYPE_PLAIN_0_0_4

# *_created series exist only in single-process mode; without them both modes expose the same
# names, and a scrape carries half the samples.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds; the payment hot path aims at p99 <= 50 ms, so resolution is finest below that.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

PAYMENTS_ACCEPTED: Final = Counter(
    "piecework_payments_accepted",
    "Payments answered with a receipt.",
)
PAYMENTS_REJECTED: Final = Counter(
    "piecework_payments_rejected",
    "Payments rejected, by problem code.",
    ["code"],
)
PAYMENT_SECONDS: Final = Histogram(
    "piecework_payment_seconds",
    "Time to answer POST /payments.",
    buckets=LATENCY_BUCKETS,
)

# The watchtower's (issue 11): set by the leader's watcher through its on_alert / on_wallet
# hooks; "mostrecent" so a scrape of any worker shows the leader's latest reading.
WATCHTOWER_ALERTS: Final = Counter(
    "piecework_watchtower_alerts",
    "Watchtower alerts (a defence that may not make it, wallet low, fee cap reached, ...).",
    ["kind"],
)
WALLET_BALANCE: Final = Gauge(
    "piecework_wallet_balance_wei",
    "The hot wallet's ETH balance, which pays the watchtower's gas, in wei.",
    multiprocess_mode="mostrecent",
)
WALLET_LOW: Final = Gauge(
    "piecework_wallet_low",
    "1 when the hot wallet holds less than PIECEWORK_WALLET_MIN_BALANCE.",
    multiprocess_mode="mostrecent",
)


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class UnclaimedAmounts:
    """``piecework_unclaimed_amount{token}``: ``amounts()`` yields ``(token, base units)``."""

    def __init__(self, amounts: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self._amounts = amounts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "piecework_unclaimed_amount",
            "Accepted but not yet claimed on chain, by token (0x00..00 is ETH), in base units.",
            labels=["token"],
        )
        for token, amount in self._amounts():
            family.add_metric([token], amount)
        yield family


class _WorkerProcesses:
    """``process_*`` of each live worker that has written to ``directory``, labelled ``pid``."""

    _PID = re.compile(r"_(\d+)\.db$")

    def __init__(self, directory: str) -> None:
        self._directory = Path(directory)

    def _workers(self) -> list[int]:
        siblings = []
        for pid in sorted({int(m[1]) for f in os.listdir(self._directory)
                           if (m := self._PID.search(f))}):
            # A worker that died (and was replaced) left its files; its pid may be reused by
            # an unrelated process, which then is not a child of our supervisor.
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getppid():
                siblings.append(pid)
        return siblings

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self._workers():
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)},
                                      sample.value)
        yield from families.values()


class _Scrape:
    """Several collectors read as one, for a single ``generate_latest``."""

    def __init__(self, collectors: Iterable[_Collector]) -> None:
        self._collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def exposition(*extra: _Collector) -> bytes:
    """One scrape in the text format: every worker's metrics, plus ``extra`` collectors."""
    sources: list[_Collector]
    if MULTIPROCESS_DIR is None:
        sources = [REGISTRY]  # ours, plus prometheus_client's process/platform/GC collectors
    else:
        sources = [
            MultiProcessCollector(None, path=MULTIPROCESS_DIR),  # type: ignore[no-untyped-call]
            PlatformCollector(registry=None),
            _WorkerProcesses(MULTIPROCESS_DIR),
        ]
    return prometheus_client.generate_latest(_Scrape([*sources, *extra]))
