"""Cost of the metric updates one payment makes (api.telemetry), in one process and in the
multiprocess mode ``piecework serve --workers N`` uses, against two baselines measured in the
same run: the hand-written lock-and-dict counters api/telemetry.py had before prometheus_client,
and one voucher verification on the hot path.

The multiprocess figure comes from a child process: prometheus_client chooses its storage when
it is imported, from PROMETHEUS_MULTIPROC_DIR.

Usage: .venv/bin/python scripts/bench_metrics.py [--seconds 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from channel.messages import Domain, Voucher, parse_signature
from channel.signing import Signer, recover_digest

LATENCY = 0.004  # a typical paid request's seconds: lands in a middle bucket


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """Microseconds per call, best of five slices (the least disturbed on a shared machine)."""
    best = float("inf")
    for _ in range(5):
        done, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            for _ in range(1000):
                fn()
            done += 1000
        best = min(best, elapsed / done * 1e6)
    return best


class HandWritten:
    """The baseline: what api/telemetry.py did per payment before prometheus_client."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepted = 0
        self._buckets = [0] * (len(self.BUCKETS) + 1)
        self._sum = 0.0
        self._count = 0

    def payment_accepted(self, seconds: float) -> None:
        with self._lock:
            self.accepted += 1
            self._buckets[bisect.bisect_left(self.BUCKETS, seconds)] += 1
            self._sum += seconds
            self._count += 1


def telemetry_us(seconds: float) -> dict[str, float]:
    """The accepted path and the rejected path of api/routes/payments.py."""
    # Not at the top: prometheus_client must be imported after PROMETHEUS_MULTIPROC_DIR is set
    # (child) or cleared (parent).
    from api import telemetry  # noqa: PLC0415

    def accepted() -> None:
        telemetry.PAYMENTS_ACCEPTED.inc()
        telemetry.PAYMENT_SECONDS.observe(LATENCY)

    def rejected() -> None:
        telemetry.PAYMENTS_REJECTED.labels("stale_voucher").inc()
        telemetry.PAYMENT_SECONDS.observe(LATENCY)

    return {"accepted_us": per_call_us(accepted, seconds),
            "rejected_us": per_call_us(rejected, seconds),
            "multiprocess": float(telemetry.MULTIPROCESS_DIR is not None)}


def verify_us(seconds: float) -> float:
    domain = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    payer = Signer(os.urandom(32))
    voucher = Voucher(os.urandom(32), 12345)
    signature = "0x" + payer.sign(domain, voucher).hex()

    def verify() -> None:
        sig = parse_signature(signature)
        if recover_digest(domain.digest(Voucher(voucher.channel_id, 12345)), sig) != (
                payer.address_bytes):
            raise AssertionError("wrong signer")

    return per_call_us(verify, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # multiprocess mode, set up by the parent
        print(json.dumps(telemetry_us(args.seconds)))
        return

    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    baseline = HandWritten()
    figures = {"handwritten_us": per_call_us(lambda: baseline.payment_accepted(LATENCY),
                                             args.seconds)}
    single = telemetry_us(args.seconds)
    figures["single_process_accepted_us"] = single["accepted_us"]
    figures["single_process_rejected_us"] = single["rejected_us"]
    with tempfile.TemporaryDirectory(prefix="piecework-bench-metrics-") as shared:
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--seconds", str(args.seconds)],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": shared},
            capture_output=True, text=True, check=True, timeout=300,
        )
    multi = json.loads(child.stdout)
    if not multi["multiprocess"]:
        raise RuntimeError("the child did not run in multiprocess mode")
    figures["multiprocess_accepted_us"] = multi["accepted_us"]
    figures["multiprocess_rejected_us"] = multi["rejected_us"]
    figures["voucher_verify_us"] = verify_us(args.seconds)
    for mode in ("single_process", "multiprocess"):
        figures[f"{mode}_vs_handwritten"] = figures[f"{mode}_accepted_us"] / figures[
            "handwritten_us"]
        figures[f"{mode}_vs_verify"] = figures[f"{mode}_accepted_us"] / figures[
            "voucher_verify_us"]
    for key, value in figures.items():
        print(f"{key:34s} {value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
