"""Bench helper: payment cost as channels (1 -> 10k) and stored payments (1k -> 1M) grow.

In-process ``PayeeService.accept`` (verify + transition + durable commit + signed receipt,
group-committed in batches of 64) on SQLite (WAL, synchronous=FULL).
Channels are inserted directly into the store as on-chain mirrors (no chain involved), and
the stored-payment levels are filled with synthetic rows of the real row shape (random
32-byte hashes and 65-byte signatures, zero-padded 78-digit amounts) by one SQL statement,
then real payments are accepted on top. Prints JSON (``--json``); run as a subprocess so its
peak RSS (``ru_maxrss``) is this measurement's own.

Usage: .venv/bin/python scripts/_bench_scaling.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa

from channel.messages import Domain, Voucher
from channel.payee import PayeeService, PaymentRequest
from channel.signing import Signer
from channel.state import ChannelStatus
from channel.store import ChannelRow, PayeeStore, WalCheckpointer, make_engine, migrate

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
ZERO = "0x" + "00" * 20
BATCH = 64


def cid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def fresh(path: Path, payer: Signer, payee: Signer, channels: int) -> PayeeService:
    # As `piecework serve` runs it: WAL checkpoints on a thread of their own.
    engine = make_engine(f"sqlite:///{path}", background_checkpoints=True)
    migrate(engine)
    now = time.time()
    rows = [{"channel_id": "0x" + cid(i).hex(), "payer": payer.address, "payee": payee.address,
             "token": ZERO, "deposit": 10**30, "claimed": 0, "challenge_period": 3600,
             "closes_at": 0, "status": int(ChannelStatus.OPEN), "accepted": 0,
             "voucher_signature": None, "updated_at": now} for i in range(channels)]
    with engine.begin() as conn:
        for start in range(0, channels, 5_000):
            conn.execute(sa.insert(ChannelRow.__table__), rows[start:start + 5_000])
    return PayeeService(PayeeStore(engine), payee, DOMAIN, min_challenge_period=3600)


def measure(service: PayeeService, payer: Signer, channels: int, n: int, *, tag: str,
            totals: dict[int, int]) -> float:
    """Accept n payments spread round-robin over ``channels``; payments per second.

    Group-committed (``accept_many``, batches of 64): one fsync per batch, so what grows
    with the tables (index depth, lookups) is not hidden behind a per-payment fsync.
    """
    reqs = []
    for i in range(n):
        c = i % channels
        totals[c] = totals.get(c, 0) + 1
        sig = payer.sign(DOMAIN, Voucher(cid(c), totals[c]))
        reqs.append(PaymentRequest(cid(c), f"{tag}-{i}", 1, totals[c], sig, 1))
    start = time.perf_counter()
    for b in range(0, n, BATCH):
        results = service.accept_many(reqs[b:b + BATCH])
        bad = [r for r in results if isinstance(r, Exception)]
        if bad:
            raise RuntimeError(f"payment refused: {bad[0]!r}")
    return n / (time.perf_counter() - start)


def fill(service: PayeeService, count: int, channels: int, offset: int) -> None:
    """Insert ``count`` synthetic payment rows of the real shape in one statement."""
    sql = sa.text(
        "WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < :n) "
        "INSERT INTO payments (channel_id, task_id, task_hash, amount, cumulative_amount, "
        "voucher_signature, receipt_signature, created_at) "
        "SELECT printf('0x%064x', x % :channels), 'fill-' || (x + :offset), "
        "'0x' || lower(hex(randomblob(32))), printf('%078d', 1), printf('%078d', x + :offset), "
        "'0x' || lower(hex(randomblob(65))), '0x' || lower(hex(randomblob(65))), 0 FROM seq"
    )
    with service.store.engine.begin() as conn:
        conn.execute(sql, {"n": count, "channels": channels, "offset": offset})


def db_bytes(service: PayeeService, path: Path) -> tuple[int, int]:
    """(bytes on disk after a WAL checkpoint, payment rows)."""
    with service.store.engine.begin() as conn:
        rows = int(conn.execute(sa.text("SELECT count(*) FROM payments")).scalar_one())
    raw = service.store.engine.raw_connection()  # outside SQLAlchemy's BEGIN
    try:
        raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        raw.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return size, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, help="payments measured per point")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    n = args.n or (1_000 if args.quick else 2_000)
    channel_levels = [1, 10, 100, 1_000] if args.quick else [1, 10, 100, 1_000, 10_000]
    stored_levels = ([1_000, 10_000, 50_000] if args.quick
                     else [1_000, 10_000, 100_000, 1_000_000])
    payer, payee = Signer.generate(), Signer.generate()
    out: dict[str, Any] = {"payments_per_point": n, "by_channels": [], "by_stored": []}
    with tempfile.TemporaryDirectory() as tmp:
        for ch in channel_levels:
            path = Path(tmp) / f"channels{ch}.db"
            service = fresh(path, payer, payee, ch)
            checkpointer = WalCheckpointer(service.store.engine).start()
            totals: dict[int, int] = {}
            measure(service, payer, ch, min(200, n), tag="warm", totals=totals)
            rate = measure(service, payer, ch, n, tag="run", totals=totals)
            out["by_channels"].append({"channels": ch, "payments_per_s": rate})
            print(f"  {ch:>7,} channels: {rate:8,.0f} payments/s", file=sys.stderr)
            checkpointer.stop()
            service.store.engine.dispose()
        channels = 1_000
        path = Path(tmp) / "stored.db"
        service = fresh(path, payer, payee, channels)
        checkpointer = WalCheckpointer(service.store.engine).start()
        totals = {}
        for level in stored_levels:
            size, rows = db_bytes(service, path)
            if level > rows:
                fill(service, level - rows, channels, offset=10**9 + rows)
            measure(service, payer, channels, min(200, n), tag=f"warm{level}", totals=totals)
            rate = measure(service, payer, channels, n, tag=f"run{level}", totals=totals)
            size, stored = db_bytes(service, path)
            out["by_stored"].append({"stored_payments": stored, "payments_per_s": rate,
                                     "db_bytes": size, "bytes_per_payment": size / stored})
            print(f"  {stored:>9,} stored: {rate:8,.0f} payments/s, "
                  f"{size / stored:6.0f} bytes/payment", file=sys.stderr)
        checkpointer.stop()
        service.store.engine.dispose()
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
