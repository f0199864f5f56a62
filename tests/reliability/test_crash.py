"""Crash safety: ``kill -9`` the payee service under load; no acknowledged payment is lost.

Payer threads pay their own channels through ``piecework serve`` while the test SIGKILLs the
service's process group at random moments and restarts it on the same port. A payer whose
request failed retries the very same voucher and task until it gets a definite answer (that
is what the API's idempotency promises). After every kill, against the database itself:

* every receipt a client holds maps to a stored voucher of at least that cumulative amount,
  with a payment row carrying that exact receipt signature;
* no channel's stored accepted amount ever goes backwards;
* at the end, per channel, the stored payment rows sum to the stored accepted amount and the
  cumulative amounts form one unbroken chain.

The payer side: a payer that crashed between signing and sending (or after sending, before
the receipt) is replaced by a fresh ``Payer`` on the same store, which resyncs from the
service and never signs two different vouchers for one cumulative amount.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
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
from channel.messages import Domain, Voucher
from channel.payer import Payer, open_payer_store
from channel.signing import Signer

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


def _payer_loop(  # noqa: PLR0917 - thread entry point
    client: PayClient, cid: bytes, index: int, acked: list[tuple[int, bytes]],
    stop: threading.Event, errors: list[str], counters: dict[str, int],
) -> None:
    rnd = random.Random(index)
    cumulative = 0
    n = 0
    pending: tuple[str, int, int] | None = None
    while not stop.is_set():
        if pending is None:
            n += 1
            amount = rnd.randint(1, 10**9)
            pending = (f"crash-{index}-{n}", amount, cumulative + amount)
        task, amount, cum = pending
        try:
            response = client.pay(cid, task, amount, cum)
        except httpx.HTTPError:
            counters["transport_errors"] += 1  # the service is down: same voucher again
            time.sleep(0.05)
            continue
        if response.status_code == 201:
            acked.append((cum, client.check_receipt(cid, task, cum, response)))
            cumulative, pending = cum, None
            counters["acked"] += 1
            time.sleep(0.005)  # leave CPU for the warm spare's imports (2-core CI machines)
        elif response.status_code == 503:
            counters["busy"] += 1
            time.sleep(0.02)
        else:
            errors.append(f"{hx(cid)} {task} {cum}: {response.status_code} {response.text}")
            return


def _check_store(
    database_url: str, acked: dict[bytes, list[tuple[int, bytes]]], floor: dict[bytes, int]
) -> None:
    store = store_for(database_url)
    try:
        for cid, receipts in acked.items():
            state = store.channel(cid)
            stored = state.accepted if state is not None else 0
            assert stored >= floor.get(cid, 0), f"{hx(cid)} went backwards"
            floor[cid] = stored
            held = list(receipts)
            if held:
                assert stored >= max(c for c, _ in held), f"{hx(cid)} lost a receipt"
            rows = {p.cumulative_amount: p.receipt_signature for p in store.payments(cid)}
            for cum, sig in held:
                assert rows.get(cum) == sig, f"{hx(cid)}: receipt at {cum} has no stored row"
    finally:
        store.engine.dispose()


def _reconcile(database_url: str, channels: list[bytes], domain: Domain, payer: str) -> int:
    store = store_for(database_url)
    try:
        total = 0
        for cid in channels:
            state = store.channel(cid)
            payments = store.payments(cid)
            accepted = state.accepted if state is not None else 0
            assert sum(p.amount for p in payments) == accepted
            assert_payer_signed(state, domain, payer)
            running = 0
            for p in sorted(payments, key=lambda p: p.cumulative_amount):
                running += p.amount
                assert p.cumulative_amount == running
            total += len(payments)
        return total
    finally:
        store.engine.dispose()


def _kill_loop(  # noqa: PLR0917 - one scenario, every part named
    label: str, database_url: str, service: Service, channels: list[bytes],
    client_for: Callable[[], PayClient], kills: int,
) -> None:
    acked: dict[bytes, list[tuple[int, bytes]]] = {cid: [] for cid in channels}
    errors: list[str] = []
    counters = {"acked": 0, "transport_errors": 0, "busy": 0}
    stop = threading.Event()
    clients = [client_for() for _ in channels]
    threads = [
        threading.Thread(target=_payer_loop, daemon=True,
                         args=(clients[i], cid, i, acked[cid], stop, errors, counters))
        for i, cid in enumerate(channels)
    ]
    rnd = random.Random(7)
    floor: dict[bytes, int] = {}
    started = time.monotonic()
    restart_times: list[float] = []
    service.start()
    for t in threads:
        t.start()
    try:
        for _ in range(kills):
            service.wait_spare()
            time.sleep(rnd.uniform(0.05, 0.4))
            service.kill9()
            _check_store(database_url, acked, floor)
            t0 = time.monotonic()
            service.start()
            restart_times.append(time.monotonic() - t0)
            assert not errors, errors[:5]
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
    assert not errors, errors[:5]
    _check_store(database_url, acked, floor)
    rows = _reconcile(database_url, channels, clients[0].domain, clients[0].signer.address)
    assert counters["acked"] > kills  # payments really flowed between the kills
    record(f"crash/{label}", kills=kills, payers=len(channels), acked=counters["acked"],
           stored_rows=rows, transport_errors=counters["transport_errors"],
           restart_s_avg=round(sum(restart_times) / len(restart_times), 2),
           seconds=round(time.monotonic() - started, 1))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill9_under_load_loses_no_acknowledged_payment(  # noqa: PLR0917 - fixtures
    backend: str, anvil_node: Node, deployment: Deployment, accounts: Accounts,
    make_client: MakeClient, make_service: Callable[..., Service], tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'crash.db'}"
        kills = scale(12, 60)
    else:
        database_url = request.getfixturevalue("pg_sqlalchemy_url")
        kills = scale(8, 40)
    channels = open_channels(make_client(accounts.payer), accounts.payee.address, scale(6, 16))
    env = service_env(anvil_node.url, deployment.channels, database_url,
                      PIECEWORK_CLAIM_MAX_AGE_SECONDS="0")
    service = make_service(env, keep_spare=True)
    domain = domain_of(deployment)
    _kill_loop(backend, database_url, service, channels,
               lambda: PayClient(service.url, domain, accounts.payer.key.hex(),
                                 accounts.payee.address, timeout=3.0),
               kills)


class _RecordingSigner(Signer):
    """Remembers every voucher it signs, per cumulative amount (across payer instances)."""

    def __init__(self, key: str, signed: dict[tuple[bytes, int], set[bytes]]) -> None:
        super().__init__(key)
        self.signed = signed

    def sign(self, domain, message):  # type: ignore[no-untyped-def]
        sig = super().sign(domain, message)
        if isinstance(message, Voucher):
            key = (message.channel_id, message.cumulative_amount)
            self.signed.setdefault(key, set()).add(bytes(sig))
        return sig


@dataclass
class _PayerRun:
    """A live service and a first ``Payer`` that opened a channel and paid 3 x 100; every
    voucher any payer on the same store signs is recorded in ``signed``."""

    service: Service
    database_url: str
    signed: dict[tuple[bytes, int], set[bytes]]
    new_payer: Callable[[], Payer]
    first: Payer
    cid: bytes

    @classmethod
    def start(  # noqa: PLR0917 - fixtures
        cls, anvil_node: Node, deployment: Deployment, accounts: Accounts,
        make_client: MakeClient, make_service: Callable[..., Service], tmp_path: Path,
    ) -> _PayerRun:
        database_url = f"sqlite:///{tmp_path / 'payee.db'}"
        service = make_service(service_env(anvil_node.url, deployment.channels, database_url))
        service.start()
        payer_db = f"sqlite:///{tmp_path / 'payer.db'}"
        signed: dict[tuple[bytes, int], set[bytes]] = {}
        key = accounts.payer.key.hex()

        def new_payer() -> Payer:
            return Payer(make_client(accounts.payer), _RecordingSigner(key, signed),
                         open_payer_store(payer_db))

        first = new_payer()
        cid = first.open_channel(accounts.payee.address, 10**15, challenge_period=3600)
        for i in range(3):
            first.pay(service.url, cid, f"before-{i}", 100)
        return cls(service, database_url, signed, new_payer, first, cid)


@pytest.mark.parametrize("sent", [False, True], ids=["crash-before-send", "crash-after-send"])
def test_payer_crash_between_signing_and_receipt_resyncs(  # noqa: PLR0917 - fixtures
    sent: bool, anvil_node: Node, deployment: Deployment, accounts: Accounts,
    make_client: MakeClient, make_service: Callable[..., Service], tmp_path: Path,
) -> None:
    run = _PayerRun.start(anvil_node, deployment, accounts, make_client, make_service, tmp_path)
    service, first, cid = run.service, run.first, run.cid
    # The crash: a voucher for 300 + 7 is signed and durably recorded, then the process dies,
    # either before the POST left or after the service stored it but before the receipt came.
    voucher = first.signer.sign(first.domain, Voucher(cid, 307))
    first.store.record_voucher(cid, accounts.payee.address, 307, voucher)
    if sent:
        body = {"task_id": "lost-receipt", "amount": "7", "cumulative_amount": "307",
                "signature": hx(voucher)}
        assert httpx.post(f"{service.url}/v1/channels/{hx(cid)}/payments", json=body,
                          timeout=5).status_code == 201  # the answer is "lost"
    first.close()

    second = run.new_payer()  # a new process on the same store
    receipt = second.pay(service.url, cid, "after-crash", 5)
    expected_base = 307 if sent else 300
    assert receipt.cumulative_amount == expected_base + 5
    second.pay(service.url, cid, "after-crash-2", 5)
    second.close()

    # one voucher per amount
    assert all(len(sigs) == 1 for sigs in run.signed.values()), run.signed
    store = store_for(run.database_url)
    state = store.channel(cid)
    assert state is not None and state.accepted == expected_base + 10
    service_rows = store.payments(cid)
    assert sum(p.amount for p in service_rows) == state.accepted
    payer_receipts = second.store.receipts(cid)
    assert {int(r["cumulative_amount"]) for r in payer_receipts} == {
        p.cumulative_amount for p in service_rows}  # the lost receipt was recovered
    latest = second.store.latest_voucher(cid)
    assert latest is not None and latest[0] == state.accepted
    record(f"payer-crash/{'after' if sent else 'before'}-send",
           vouchers_signed=len(run.signed),
           payments=len(service_rows), accepted=state.accepted)


def test_payer_crash_after_a_receipt_before_it_is_stored_recovers_it(  # noqa: PLR0917
    anvil_node: Node, deployment: Deployment, accounts: Accounts,
    make_client: MakeClient, make_service: Callable[..., Service], tmp_path: Path,
) -> None:
    """A receipt is stored with the next voucher's commit (one fsync per payment). A crash
    after pay() returned, before that commit, loses only the receipt, never the voucher: the
    stored voucher is then above the stored receipts, so the next Payer on the store resyncs
    and gets the receipt back from the service before paying again."""
    run = _PayerRun.start(anvil_node, deployment, accounts, make_client, make_service, tmp_path)
    service, first, cid = run.service, run.first, run.cid
    # The crash: no flush/close; the last receipt (300) was only in memory.
    assert first.store.latest_voucher(cid) is not None
    assert first.store.latest_voucher(cid)[0] == 300  # type: ignore[index]
    assert first.store.latest_receipt_amount(cid) == 200
    first.http.close()

    second = run.new_payer()
    assert second.pay(service.url, cid, "after-crash", 5).cumulative_amount == 305
    second.close()
    assert all(len(sigs) == 1 for sigs in run.signed.values()), run.signed
    service_rows = store_for(run.database_url).payments(cid)
    payer_rows = second.store.receipts(cid)
    assert {int(r["cumulative_amount"]) for r in payer_rows} == {
        p.cumulative_amount for p in service_rows} == {100, 200, 300, 305}
    record("payer-crash/after-receipt", vouchers_signed=len(run.signed),
           payments=len(service_rows), receipts=len(payer_rows))
