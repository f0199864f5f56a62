"""Where a payment's time goes: a timeline through the group committer and a profile under load.

(1) Timeline: one payment at a time through ``GroupCommitter`` in-process (SQLite, WAL,
    synchronous=FULL), each stage timed by wrapping the service's own methods: queue -> decider,
    the batch's store read, verify + transition + receipt signature, hand-off to the committer,
    the commit (SQL + COMMIT's fsync), and the wake-up of the caller. Beside it, a bare
    ``fsync`` of a 4 kB write in the same directory measured in the same run: the physical
    floor of one durable commit here.
(2) Profile: ``py-spy record`` (sampling, all threads, idle included) of ``piecework serve``
    (1 worker, SQLite) while wrk drives 64 connections of real payments on real anvil channels,
    aggregated per thread and per cost category.

Usage: .venv/bin/python scripts/bench_profile.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core
import bench_http

import channel.payee as payee_module
from channel.devnet import Supervisor
from channel.payee import GroupCommitter, PaymentRequest
from channel.signing import Signer

PY_SPY_MISSING = ("py-spy is not installed: the profile needs it. It is in the [dev] extras "
                  "(make setup), or: .venv/bin/pip install py-spy")


# --- (1) timeline ----------------------------------------------------------------------------

def fsync_floor(directory: Path, n: int = 200) -> dict[str, float]:
    """Milliseconds of one fdatasync after rewriting a 4 kB page of a preallocated file in
    ``directory`` (same filesystem): what SQLite's WAL does at each commit, without SQLite."""
    fd, path = tempfile.mkstemp(dir=directory)
    times = []
    try:
        os.write(fd, b"\0" * (1 << 20))
        os.fsync(fd)
        for i in range(n):
            os.pwrite(fd, os.urandom(4096), (i % 256) * 4096)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return {"p50_ms": times[n // 2], "p90_ms": times[n * 9 // 10], "mean_ms": sum(times) / n}


def timeline(n: int) -> dict[str, Any]:
    """Median milliseconds per stage of a lone payment through the group committer."""
    payer, payee = Signer.generate(), Signer.generate()
    with tempfile.TemporaryDirectory() as tmp:
        service = bench_core.fresh_service(f"sqlite:///{tmp}/timeline.db", payer, payee, 1)
        reqs = bench_core.make_requests(payer, n, "timeline", 1)
        marks: dict[str, float] = {}
        spans: Counter[str] = Counter()

        def around(name: str, fn: Callable[..., Any], *, start: str = "",
                   end: str = "") -> Callable[..., Any]:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                if start:
                    marks[start] = t
                try:
                    return fn(*args, **kwargs)
                finally:
                    done = time.perf_counter()
                    spans[name] += done - t
                    if end:
                        marks[end] = done
            return wrapped

        service._plan = around("plan", service._plan, start="plan_start", end="plan_end")  # type: ignore[method-assign]
        service._commit = around("commit", service._commit, start="commit_start",  # type: ignore[method-assign]
                                 end="commit_end")
        service.store.load_many = around("load", service.store.load_many)  # type: ignore[method-assign]
        real_signer = service.signer

        class TimedSigner:  # Signer has __slots__: time its sign through a stand-in
            address = real_signer.address
            sign = staticmethod(around("sign", real_signer.sign))

        service.signer = TimedSigner()  # type: ignore[assignment]
        real_recover = payee_module.recover_digest
        payee_module.recover_digest = around("recover", real_recover)
        committer = GroupCommitter(service)
        rows = []
        try:
            for r in reqs:
                spans.clear()
                t0 = time.perf_counter()
                committer.submit(PaymentRequest(r.channel_id, r.task_id, r.amount,
                                                r.cumulative_amount, r.signature, 1)).result(30)
                t_end = time.perf_counter()
                plan = spans["plan"] - spans["load"] - spans["sign"] - spans["recover"]
                rows.append({
                    "queue -> decider picks it up": marks["plan_start"] - t0,
                    "store read (load_many: channel + payment rows)": spans["load"],
                    "voucher signer recovery (secp256k1)": spans["recover"],
                    "receipt signature": spans["sign"],
                    "parse + transition + rest of the decision": plan,
                    "hand-off decider -> committer": marks["commit_start"] - marks["plan_end"],
                    "commit: CAS UPDATE + INSERT + COMMIT (fsync)": spans["commit"],
                    "committer -> caller wakes with the receipt": t_end - marks["commit_end"],
                    "total": t_end - t0,
                })
        finally:
            committer.close()
            payee_module.recover_digest = real_recover
            service.store.engine.dispose()
        floor = fsync_floor(Path(tmp))
    stages = {k: statistics.median(row[k] for row in rows) * 1000 for k in rows[0]}
    return {"payments": n, "median_ms": stages, "fsync_same_dir": floor}


# --- (2) profile under load ------------------------------------------------------------------

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    # (category, substrings of a frame, checked from the innermost frame outwards)
    ("COMMIT (fsync of the WAL)", ("do_commit", "_commit_impl")),
    ("SQL statements (SQLite)", ("do_execute", "do_executemany", "_exec_single_context",
                                 "_exec_insertmany_context")),
    ("secp256k1 recover (voucher)", ("recover_digest", "from_signature_and_message")),
    ("receipt signing", ("sign_recoverable", "signing.py")),
    ("EIP-712 hashing / keccak", ("_keccak", "digest (channel")),
    ("waiting for work (idle)", ("wait (threading", "get (queue", "_worker (concurrent",
                                 "select (selectors", "run_forever", "poll", "epoll")),
    ("pydantic / JSON", ("pydantic", "json/")),
    ("HTTP + ASGI (uvicorn, httptools, starlette)", ("uvicorn", "httptools", "starlette",
                                                     "fastapi")),
    ("SQLAlchemy connection / pool / result", ("sqlalchemy",)),
    ("prometheus metrics", ("prometheus_client",)),
    ("payment lean door / accept (api.routes.payments)", ("routes/payments.py",)),
    ("payee decision (parse, transition, overlay)", ("channel/payee.py", "channel/state.py",
                                                     "channel/messages.py")),
    ("store: row conversion and driver calls (channel/store.py)", ("channel/store.py",)),
    ("event loop: idle, or in uvloop's C code", ("asyncio", "uvloop")),
]


def categorize(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other Python"


def thread_of(first: str) -> str:
    for name in ("gc-decide", "gc-commit", "gc-lookup", "MainThread", "watcher", "leader"):
        if name in first:
            return name
    return first.split(" ", 1)[0] if first else "?"


def aggregate(raw: str) -> dict[str, Any]:
    """py-spy's raw (collapsed) output -> samples per thread x category."""
    table: dict[str, Counter[str]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = thread_of(frames[0])
        table.setdefault(thread, Counter())[categorize(frames[1:])] += int(count)
    return {t: dict(c.most_common()) for t, c in table.items()}


def profile(seconds: float, connections: int = 64) -> dict[str, Any]:
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
        "py-spy")
    if not py_spy:
        raise RuntimeError(PY_SPY_MISSING)
    wrk = bench_http.ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="piecework-profile-"))
    plan = bench_http.Plan([connections], [1], ["sqlite"], seconds)
    with Supervisor(workdir / "logs") as sup:
        net = bench_http.start_devnet(sup)
        ids = bench_http.open_channels(net, connections, 10**18)
        dirs = bench_http.presign(net, ids, plan, workdir / "vouchers")
        proc, url = bench_http.start_service(sup, net, f"sqlite:///{workdir / 'p.db'}",
                                             workers=1, name="profiled")
        try:
            sup.wait_http(proc, f"{url}/healthz", timeout=120)
            bench_http.warm_up(url, dirs[connections], connections)
            out = workdir / "py-spy.txt"
            spy = subprocess.Popen(
                [py_spy, "record", "-p", str(proc.pid), "-d", str(max(1, round(seconds))),
                 "-r", "250", "--threads", "--idle", "-f", "raw", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            load = bench_http.run_wrk(wrk, url, dirs[connections], connections, seconds)
            _, err = spy.communicate(timeout=seconds + 60)
            if spy.returncode != 0 or not out.exists():
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace').strip()}")
            table = aggregate(out.read_text())
        finally:
            bench_http.stop(sup, proc)
    shutil.rmtree(workdir, ignore_errors=True)
    return {"connections": connections, "seconds": seconds, "paid_per_s": load["paid_per_s"],
            "p99_ms": load["p99_ms"], "samples": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {"timeline": timeline(150 if args.quick else 600)}
    for stage, ms in result["timeline"]["median_ms"].items():
        print(f"  {stage:50s} {ms:7.3f} ms")
    print(f"  bare fsync here: {result['timeline']['fsync_same_dir']}")
    try:
        result["profile"] = profile(3.0 if args.quick else 8.0)
        for thread, cats in result["profile"]["samples"].items():
            total = sum(cats.values())
            print(f"  {thread}: " + ", ".join(f"{c} {v / total:.0%}" for c, v in cats.items()))
    except Exception as exc:
        result["profile_error"] = f"{type(exc).__name__}: {exc}"
        print(f"  profile skipped: {result['profile_error']}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
