"""Durable payment acceptances per second (verify + transition + commit + signed receipt).

Runs in one process on SQLite (WAL, synchronous=FULL, a temporary file) and on PostgreSQL
(a temporary schema), one at a time (one commit per payment) and group-committed
(``accept_many``: one commit per batch), and prints each figure also as a ratio of raw
libsecp256k1 recovery measured in the same run.

Usage: .venv/bin/python scripts/bench_core.py [-n 3000] [--batch 64] [--inflight 16]
       [--postgres URL]
       [--no-postgres] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coincurve
import psycopg

from channel.messages import Domain, Voucher
from channel.payee import GroupCommitter, PayeeService, PaymentRequest
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, migrate

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
CHANNELS = 8


def raw_recover_rate(seconds: float = 1.0) -> float:
    key = coincurve.PrivateKey()
    digests = [os.urandom(32) for _ in range(256)]
    sigs = [key.sign_recoverable(d, hasher=None) for d in digests]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for d, s in zip(digests, sigs, strict=True):
            coincurve.PublicKey.from_signature_and_message(s, d, hasher=None).format(False)
        done += len(digests)
    return done / (time.perf_counter() - start)


def make_requests(
    payer: Signer, n: int, tag: str, channels: int = CHANNELS
) -> list[PaymentRequest]:
    """n honest payments spread round-robin over ``channels`` channels, in order per channel."""
    totals = [0] * channels
    out = []
    for i in range(n):
        c = i % channels
        cid = c.to_bytes(32, "big")
        totals[c] += 1
        sig = payer.sign(DOMAIN, Voucher(cid, totals[c]))
        out.append(PaymentRequest(cid, f"{tag}-{i}", 1, totals[c], sig, 1_000))
    return out


def fresh_service(url: str, payer: Signer, payee: Signer, channels: int = CHANNELS) -> PayeeService:
    engine = make_engine(url, pool_size=8, max_overflow=0)
    migrate(engine)
    store = PayeeStore(engine)
    for c in range(channels):
        store.upsert_channel(
            OnchainChannel(
                c.to_bytes(32, "big"),
                payer.address,
                payee.address,
                "0x" + "00" * 20,
                10**30,
                0,
                3600,
                0,
                ChannelStatus.OPEN,
            )
        )
    return PayeeService(store, payee, DOMAIN, min_challenge_period=3600)


def timed(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def direct_batches(service: PayeeService, reqs: list[PaymentRequest], batch: int) -> float:
    """Payments/s committing ``reqs`` with direct ``accept_many`` calls of ``batch`` each."""

    def run() -> None:
        for i in range(0, len(reqs), batch):
            results = service.accept_many(reqs[i : i + batch])
            bad = [r for r in results if isinstance(r, Exception)]
            if bad:
                raise RuntimeError(bad[0])

    return timed(run, len(reqs))


def run_backend(  # noqa: PLR0917 - a script's plain entry point
    name: str,
    make_url: Callable[[], str],
    n: int,
    batch: int,
    inflight: int,
    figures: dict[str, float],
) -> None:
    """Three figures for one backend; every measurement gets a fresh database."""
    payer, payee = Signer.generate(), Signer.generate()

    service = fresh_service(make_url(), payer, payee)
    reqs = make_requests(payer, n, "single")

    def one_by_one() -> None:
        for r in reqs:
            service.accept(r.channel_id, r.task_id, r.amount, r.cumulative_amount, r.signature, 1)

    figures[f"{name}_single_commit_per_s"] = timed(one_by_one, n)

    figures[f"{name}_group_commit_batch{batch}_per_s"] = direct_batches(
        fresh_service(make_url(), payer, payee), make_requests(payer, n, "batch"), batch)

    # One GroupCommitter fed by 8 caller threads with `inflight` channels each: every caller
    # submits the next payment of each of its channels, then waits for those receipts (a
    # payer needs the receipt before paying again), like an async server's event loops.
    callers = 8
    channels = callers * inflight

    # Its baseline: the very same payments (as many channels, each batch of `batch` on as
    # many distinct channels) committed by direct accept_many calls, no threads: what the
    # committer's hand-offs and pipelining cost or gain, apart from the workload's shape.
    figures[f"{name}_direct_batch{batch}_{channels}_channels_per_s"] = direct_batches(
        fresh_service(make_url(), payer, payee, channels),
        make_requests(payer, n, "same", channels), batch)
    service = fresh_service(make_url(), payer, payee, channels)
    reqs = make_requests(payer, n, "committer", channels)
    committer = GroupCommitter(service, max_batch=max(batch, channels))

    def caller(k: int) -> None:
        mine = [reqs[c::channels] for c in range(k * inflight, (k + 1) * inflight)]
        for step in range(max(len(m) for m in mine)):
            futures = [committer.submit(m[step]) for m in mine if step < len(m)]
            for f in futures:
                f.result(60)

    def threaded() -> None:
        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(caller, range(callers)))

    figures[f"{name}_group_committer_{channels}_in_flight_per_s"] = timed(threaded, n)
    committer.close()
    figures[f"{name}_group_committer_mean_batch"] = committer.items / max(1, committer.batches)


@contextmanager
def sqlite_urls() -> Iterator[Callable[[], str]]:
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1_000_000))
        yield lambda: f"sqlite:///{tmp}/bench{next(counter)}.db"


@contextmanager
def postgres_urls(base: str) -> Iterator[Callable[[], str]]:
    schemas: list[str] = []
    conn = psycopg.connect(base, autocommit=True, connect_timeout=3)

    def make() -> str:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        conn.execute(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}"

    try:
        yield make
    finally:
        for s in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="payments per measurement")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--inflight", type=int, default=16, help="channels in flight per GroupCommitter caller"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PIECEWORK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    figures: dict[str, float] = {"raw_coincurve_recover_per_s": raw_recover_rate()}
    with sqlite_urls() as make:
        run_backend("sqlite", make, args.n, args.batch, args.inflight, figures)
    if not args.no_postgres:
        try:
            with postgres_urls(args.postgres) as make:
                run_backend("postgres", make, args.n, args.batch, args.inflight, figures)
        except Exception as exc:  # report and go on: SQLite figures are still useful
            print(f"postgres skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    raw = figures["raw_coincurve_recover_per_s"]
    for key, value in figures.items():
        plain = key.startswith("raw_") or key.endswith("_batch")
        ratio = "" if plain else f"   ({value / raw:.2f} x raw recover)"
        print(f"{key:44s} {value:10,.0f}{ratio}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
