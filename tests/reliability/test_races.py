"""Races: 64 concurrent payers on one channel and across many, SQLite and 2-worker PostgreSQL.

Every payer signs ``Voucher(channel, what it believes is current + amount)``; a ``409
stale_voucher`` tells it the real current amount and it tries again on top of that. Whatever
the interleaving, per channel: the 201-acknowledged amounts sum to the stored accepted amount
to the unit, no cumulative amount is acknowledged twice (no double count), every
acknowledged receipt has its stored payment row (no lost update), and the rows form one
unbroken cumulative chain.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from piecework_testnode import Accounts, Deployment, Node
from reliability_harness import (
    PayClient,
    Service,
    assert_payer_signed,
    domain_of,
    hx,
    open_channels,
    record,
    scale,
    service_env,
    store_for,
)

from channel.chain import ChainClient
from channel.messages import Domain

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]
PAYERS = 64


def _race(client_for: Callable[[], PayClient], channels: list[bytes], per_payer: int
          ) -> tuple[dict[bytes, list[tuple[str, int, int, bytes]]], dict[str, int]]:
    acked: dict[bytes, list[tuple[str, int, int, bytes]]] = {c: [] for c in channels}
    lock = threading.Lock()
    counters = {"201": 0, "409": 0, "other": 0}
    errors: list[str] = []
    start = threading.Barrier(PAYERS)

    def payer(index: int) -> None:
        rnd = random.Random(index)
        client = client_for()
        known: dict[bytes, int] = {}
        try:
            start.wait()
            for n in range(per_payer):
                cid = channels[(index + n * PAYERS) % len(channels)]
                task = f"race-{index}-{n}"
                amount = rnd.randint(1, 10**12)
                for _attempt in range(400):
                    cumulative = known.get(cid, 0) + amount
                    r = client.pay(cid, task, amount, cumulative)
                    if r.status_code == 201:
                        sig = client.check_receipt(cid, task, cumulative, r)
                        known[cid] = cumulative
                        with lock:
                            acked[cid].append((task, amount, cumulative, sig))
                            counters["201"] += 1
                        break
                    if r.status_code == 409 and r.json()["code"] == "stale_voucher":
                        known[cid] = int(r.json()["current_cumulative_amount"])
                        with lock:
                            counters["409"] += 1
                        continue
                    with lock:
                        counters["other"] += 1
                    if r.status_code == 503:
                        time.sleep(0.01)
                        continue
                    errors.append(f"{r.status_code} {r.text}")
                    return
                else:
                    errors.append(f"{task} never got through")
        finally:
            client.close()

    with ThreadPoolExecutor(PAYERS) as pool:
        list(pool.map(payer, range(PAYERS)))
    assert not errors, errors[:5]
    return acked, counters


def _reconcile(
    database_url: str, acked: dict[bytes, list[tuple[str, int, int, bytes]]], domain: Domain,
    payer: str,
) -> int:
    store = store_for(database_url)
    try:
        units = 0
        for cid, receipts in acked.items():
            state = store.channel(cid)
            stored = state.accepted if state is not None else 0
            assert sum(a for _, a, _, _ in receipts) == stored, hx(cid)
            assert_payer_signed(state, domain, payer)
            cumulatives = [c for _, _, c, _ in receipts]
            assert len(set(cumulatives)) == len(cumulatives), f"double count on {hx(cid)}"
            rows = {p.cumulative_amount: (p.task_id, p.receipt_signature)
                    for p in store.payments(cid)}
            assert len(rows) == len(receipts), f"{hx(cid)}: rows != acknowledged payments"
            for task, _, cum, sig in receipts:
                assert rows[cum] == (task, sig), f"lost update on {hx(cid)} at {cum}"
            running = 0
            for p in sorted(store.payments(cid), key=lambda p: p.cumulative_amount):
                running += p.amount
                assert p.cumulative_amount == running
            units += stored
        return units
    finally:
        store.engine.dispose()


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", 1), ("postgres", 2)])
@pytest.mark.parametrize("shape", ["one-channel", "many-channels"])
def test_concurrent_payers_reconcile_to_the_unit(  # noqa: PLR0917 - fixtures
    shape: str, backend: str, workers: int, anvil_node: Node, deployment: Deployment,
    accounts: Accounts, make_client: MakeClient, make_service: Callable[..., Service],
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'race.db'}"
    else:
        database_url = request.getfixturevalue("pg_sqlalchemy_url")
    count = 1 if shape == "one-channel" else scale(100, 1000)
    per_payer = scale(2, 40) if shape == "one-channel" else max(1, 2 * count // PAYERS)
    channels = open_channels(make_client(accounts.payer), accounts.payee.address, count)
    service = make_service(
        service_env(anvil_node.url, deployment.channels, database_url,
                    PIECEWORK_CLAIM_MAX_AGE_SECONDS="0"),
        workers=workers,
    )
    service.start()
    domain = domain_of(deployment)
    started = time.monotonic()
    acked, counters = _race(
        lambda: PayClient(service.url, domain, accounts.payer.key.hex(), accounts.payee.address,
                          timeout=30.0),
        channels, per_payer)
    seconds = time.monotonic() - started
    units = _reconcile(database_url, acked, domain, accounts.payer.address)
    assert counters["201"] == PAYERS * per_payer
    record(f"race/{shape}/{backend}x{workers}", payers=PAYERS, channels=count,
           acknowledged=counters["201"], stale_409=counters["409"], other=counters["other"],
           reconciled_units=units, seconds=round(seconds, 1))
