"""The store on SQLite and PostgreSQL: lossless uint256, migrations, atomic compare-and-set."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from payee_helpers import (
    DOMAIN,
    PAYEE_KEY,
    PAYER_KEY,
    make_onchain,
    pay_until,
)
from sqlalchemy.engine import Engine

from channel.errors import TaskConflict, UnknownChannel
from channel.messages import MAX_UINT256, Domain, Receipt, task_id_hash
from channel.payee import InMemoryChannelSource, PayeeService
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel, PaymentAccepted
from channel.store import (
    PayeeStore,
    PayerStore,
    PendingPayment,
    StoredConsent,
    WalCheckpointer,
    make_engine,
    metadata,
    migrate,
)

CID = b"\xc1" * 32


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> PayeeStore:
    return PayeeStore(engine)


def pending(  # noqa: PLR0917 - a test factory
    prev: int,
    new: int,
    task: int,
    cid: bytes = CID,
    revision: int = 0,
    task_id: str | None = None,
    requested: bool = False,
) -> PendingPayment:
    name = task_id if task_id is not None else f"task-{task}"
    th = task_id_hash(name) if task_id is not None else task.to_bytes(32, "big")
    event = PaymentAccepted(cid, th, new - prev, prev, new, b"\x01" * 65, revision, requested)
    return PendingPayment(event, name, b"\x02" * 65)


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_pragmas(tmp_path: object) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_wal_checkpoints_leave_the_commit_path(tmp_path: object) -> None:
    """With background checkpoints a commit no longer copies the WAL into the database file
    every 1,000 pages (SQLite's default); the checkpointer thread does, and the data is whole."""
    url = f"sqlite:///{tmp_path}/x.db"
    engine = make_engine(url, background_checkpoints=True)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 16_384
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # still FULL
    with make_engine(url).connect() as conn:  # the default engine keeps SQLite's own
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1_000
    checkpointer = WalCheckpointer(engine, interval=0.01).start()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (v BLOB)")
        for _ in range(50):  # ~100 pages through the WAL, 50 commits
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (randomblob(8000))")
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        checkpointer.stop()
    assert checkpointer.checkpoints > 0
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 50
    engine.dispose()
    # Outside any transaction, a last checkpoint finds everything already copied.
    raw = sqlite3.connect(f"{tmp_path}/x.db", isolation_level=None)
    try:
        busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        raw.close()
    assert busy == 0 and copied == frames


def test_hot_path_writers_queue_on_one_lock_across_threads_and_processes(
    tmp_path: object,
) -> None:
    """The payee store's write transactions wait on a flock beside the database (woken as
    soon as it is free) instead of SQLite's sleeping busy handler; another process cannot
    take it while a write holds it, and a thread of the same process waits its turn."""
    url = f"sqlite:///{tmp_path}/x.db"
    engine = make_engine(url)
    migrate(engine)
    store = PayeeStore(engine)
    store.upsert_channel(make_onchain(CID))
    lock_file = f"{tmp_path}/x.db-writers.lock"
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    order: list[str] = []
    with store._sql.write() as cur:  # a write transaction in progress
        got = subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
        other = threading.Thread(
            target=lambda: order.append(
                "second" if store.accept_payments([pending(0, 1, task=1)]) else "lost"))
        other.start()
        time.sleep(0.2)
        order.append("first")
        cur.execute("SELECT 1")
    other.join(10)
    assert got == "held"
    assert order == ["first", "second"]
    assert subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip() == "free"
    assert store.channel(CID).accepted == 1  # type: ignore[union-attr]


def test_wal_checkpointer_is_a_no_op_off_sqlite_files() -> None:
    for url in ("sqlite://", "postgresql://nobody@127.0.0.1:1/none"):
        checkpointer = WalCheckpointer(make_engine(url)).start()
        checkpointer.stop()
        assert checkpointer.checkpoints == 0


@pytest.mark.parametrize("value", [0, 1, 2**53 + 1, 2**63, 2**64 + 1, 10**77, MAX_UINT256])
def test_uint256_roundtrip(store: PayeeStore, value: int) -> None:
    store.upsert_channel(make_onchain(CID, deposit=value, claimed=value))
    state = store.channel(CID)
    assert state is not None
    assert (state.deposit, state.claimed, state.accepted) == (value, value, value)


def test_uint256_orders_numerically(store: PayeeStore, engine: Engine) -> None:
    values = [MAX_UINT256, 2**64, 9, 10, 2**63 + 1, 0]
    for i, v in enumerate(values):
        store.upsert_channel(make_onchain(i.to_bytes(32, "big"), deposit=v))
    channels = store.channel.__self__.engine  # type: ignore[attr-defined]
    table = metadata.tables["channels"]
    with channels.connect() as conn:
        got = [r.deposit for r in conn.execute(sa.select(table).order_by(table.c.deposit))]
    assert got == sorted(values)


def test_compare_and_set_is_atomic_with_the_payment_row(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    assert store.accept_payment(pending(0, 10, task=1))
    # Same previous amount again: another writer got there first.
    assert not store.accept_payment(pending(0, 7, task=2))
    # Right previous amount but a task already paid: the unique key refuses it and the
    # channel update in the same transaction is rolled back with it.
    assert not store.accept_payment(pending(10, 15, task=1))
    state = store.channel(CID)
    assert state is not None and state.accepted == 10
    assert [p.cumulative_amount for p in store.payments(CID)] == [10]


def test_batch_commits_all_together(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    assert store.accept_payments([pending(0, 1, task=1), pending(1, 3, 2), pending(3, 6, 4)])
    state = store.channel(CID)
    assert state is not None and state.accepted == 6
    assert [p.amount for p in store.payments(CID)] == [1, 2, 3]


OTHER = b"\xc2" * 32


def test_batch_on_many_channels_keeps_uint256_amounts(store: PayeeStore) -> None:
    """A batch across channels with amounts far past 64 bits (PostgreSQL writes it from
    arrays in three statements; SQLite row by row): every value comes back exact."""
    store.upsert_channel(make_onchain(CID, deposit=MAX_UINT256))
    store.upsert_channel(make_onchain(OTHER, deposit=MAX_UINT256))
    big = MAX_UINT256 - 5
    assert store.accept_payments([
        pending(0, 2**64 + 1, task=1), pending(2**64 + 1, big, task=2),
        pending(0, 7, task=3, cid=OTHER), pending(7, MAX_UINT256, task=4, cid=OTHER),
    ])
    assert store.channel(CID).accepted == big  # type: ignore[union-attr]
    assert store.channel(OTHER).accepted == MAX_UINT256  # type: ignore[union-attr]
    assert [(p.amount, p.cumulative_amount) for p in store.payments(CID)] == [
        (2**64 + 1, 2**64 + 1), (big - 2**64 - 1, big)]
    assert [(p.amount, p.cumulative_amount) for p in store.payments(OTHER)] == [
        (7, 7), (MAX_UINT256 - 7, MAX_UINT256)]


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        ([pending(6, 7, task=10), pending(3, 4, task=11, cid=OTHER)], "other channel moved"),
        ([pending(6, 7, task=10), pending(7, 8, task=1)], "task 1 is already stored"),
        ([pending(5, 7, task=10)], "previous amount is stale"),
        # Two channels, the one that moved on either side of the one that did not (PostgreSQL
        # sends both compare-and-sets in one flight and must still see each row's miss).
        ([pending(5, 7, task=10), pending(0, 1, task=11, cid=OTHER)], "first of two is stale"),
        ([pending(6, 7, task=10), pending(1, 2, task=11, cid=OTHER)], "second of two is stale"),
    ],
)
def test_batch_that_lost_a_race_writes_nothing(
    store: PayeeStore, batch: list[PendingPayment], why: str
) -> None:
    store.upsert_channel(make_onchain(CID))
    store.upsert_channel(make_onchain(OTHER))
    assert store.accept_payments([pending(0, 1, task=1), pending(1, 6, task=2)])
    assert not store.accept_payments(batch), why
    assert store.channel(CID).accepted == 6  # type: ignore[union-attr]
    assert store.channel(OTHER).accepted == 0  # type: ignore[union-attr]
    assert len(store.payments(CID)) == 2


def test_batch_must_be_consecutive_per_channel(store: PayeeStore) -> None:
    with pytest.raises(ValueError, match="consecutive"):
        store.accept_payments([pending(0, 1, task=1), pending(2, 3, task=2)])


def test_service_batch_mixes_receipts_and_errors(engine: Engine) -> None:
    from channel.errors import InvalidAmount, StaleVoucher
    from channel.payee import PaymentRequest

    service = _service(engine)
    reqs = [
        PaymentRequest(CID, "a", 1, 1, _voucher_sig(1), 1),
        PaymentRequest(CID, "b", 2, 3, _voucher_sig(3), 1),
        PaymentRequest(CID, "c", 2, 2, _voucher_sig(2), 1),  # stale: does not extend 3
        PaymentRequest(CID, "d", "01", 4, _voucher_sig(4), 1),  # malformed amount
        PaymentRequest(CID, "a", 1, 1, _voucher_sig(1), 1),  # replay of "a" in the batch
        PaymentRequest(CID, "e", 3, 6, _voucher_sig(6), 1),
    ]
    results = service.accept_many(reqs)
    assert [type(r).__name__ for r in results] == [
        "SignedReceipt",
        "SignedReceipt",
        StaleVoucher.__name__,
        InvalidAmount.__name__,
        "SignedReceipt",
        "SignedReceipt",
    ]
    assert results[0] == results[4]
    assert PayeeStore(engine).channel(CID).accepted == 6  # type: ignore[union-attr]


def test_receipt_is_returned_only_after_commit(db_url: str, engine: Engine) -> None:
    # A second, independent engine (another process's view) sees the payment as soon as
    # accept() has returned: the commit happened before the receipt left.
    service = _service(engine)
    receipt = service.accept(CID, "t-1", 5, 5, _voucher_sig(5), now=1_000)
    other = make_engine(db_url)
    try:
        again = PayeeStore(other).payment(CID, receipt.task_id)
        assert again is not None and again.receipt_signature == receipt.signature
        assert PayeeStore(other).channel(CID).accepted == 5  # type: ignore[union-attr]
    finally:
        other.dispose()


def test_idempotent_replay_returns_the_stored_receipt(engine: Engine) -> None:
    service = _service(engine)
    first = service.accept(CID, "t-1", 5, 5, _voucher_sig(5), now=1)
    second = service.accept(CID, "t-1", 5, 5, _voucher_sig(5), now=2)
    assert first == second
    assert len(PayeeStore(engine).payments(CID)) == 1


def test_fifty_threads_pay_one_channel_without_double_counting(engine: Engine) -> None:
    service = _service(engine)
    store = PayeeStore(engine)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            pay_until(service, CID, f"thread-{n}", amount=n + 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    payments = store.payments(CID)
    assert len(payments) == 50
    state = store.channel(CID)
    assert state is not None
    assert state.accepted == sum(p.amount for p in payments) == sum(range(1, 51))
    # Cumulative amounts form one chain: each payment extends exactly the previous one.
    chain = sorted(p.cumulative_amount for p in payments)
    assert all(b - a > 0 for a, b in zip([0, *chain], chain, strict=False))


def _process_worker(db_url: str, prefix: str, count: int) -> None:
    engine = make_engine(db_url)
    service = _service(engine, create=False)
    for i in range(count):
        pay_until(service, CID, f"{prefix}-{i}", amount=1)
    engine.dispose()


def test_two_processes_pay_one_channel_without_double_counting(db_url: str, engine: Engine) -> None:
    _service(engine)  # creates the channel row
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_worker, args=(db_url, f"p{n}", 40)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = PayeeStore(engine)
    payments = store.payments(CID)
    assert len(payments) == 80
    assert store.channel(CID).accepted == sum(p.amount for p in payments) == 80  # type: ignore[union-attr]


def test_cursor_transactions_and_change_log(store: PayeeStore) -> None:
    from channel.state import ChannelToppedUp

    assert store.cursor() is None
    store.set_cursor(10, "0x" + "ab" * 32)
    store.set_cursor(11, "0x" + "cd" * 32)
    assert store.cursor() == (11, "0x" + "cd" * 32)
    tx = store.add_transaction("claim_many", [CID, b"\x02" * 32])
    store.update_transaction(tx, tx_hash="0x" + "ee" * 32, nonce=7, status="sent", attempts=1)
    (row,) = store.transactions("sent")
    assert (row["nonce"], row["attempts"], row["kind"]) == (7, 1, "claim_many")
    change = ChannelToppedUp(CID, MAX_UINT256)
    store.log_change(CID, change)
    assert store.changes(CID) == [change]


def test_payer_store(engine: Engine) -> None:
    payer = PayerStore(engine)
    payer.record_voucher(CID, "0x" + "bb" * 20, 10, b"\x01" * 65)
    payer.record_voucher(CID, "0x" + "bb" * 20, 5, b"\x02" * 65)  # older: ignored
    payer.record_voucher(CID, "0x" + "bb" * 20, MAX_UINT256, b"\x03" * 65)
    assert payer.latest_voucher(CID) == (MAX_UINT256, b"\x03" * 65)
    for _ in range(2):
        payer.record_receipt(
            CID,
            task_id="t",
            task_hash=b"\x04" * 32,
            amount=3,
            cumulative_amount=MAX_UINT256,
            receipt_signature=b"\x05" * 65,
        )
    (receipt,) = payer.receipts(CID)
    assert receipt["cumulative_amount"] == MAX_UINT256
    assert payer.latest_receipt_amount(CID) == MAX_UINT256
    assert payer.latest_receipt_amount(b"\x0f" * 32) == 0


def test_latest_receipt_amount_is_numeric_not_textual(engine: Engine) -> None:
    # 9 < 10 < 2**200: compared as numbers on both backends (text must not sort "9" > "10").
    payer = PayerStore(engine)
    for i, amount in enumerate([9, 10, 2**200]):
        payer.record_receipt(CID, task_id=f"t{i}", task_hash=bytes([i]) * 32, amount=1,
                             cumulative_amount=amount, receipt_signature=b"\x05" * 65)
    assert payer.latest_receipt_amount(CID) == 2**200


def test_oldest_unclaimed_at(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    assert store.oldest_unclaimed_at(CID, 0) is None
    assert store.accept_payments([pending(0, 9, task=1)], now=100.0)
    assert store.accept_payments([pending(9, 10, task=2)], now=200.0)
    assert store.accept_payments([pending(10, 2**200, task=3)], now=300.0)
    assert store.oldest_unclaimed_at(CID, 0) == 100.0
    assert store.oldest_unclaimed_at(CID, 9) == 200.0
    assert store.oldest_unclaimed_at(CID, 10) == 300.0
    assert store.oldest_unclaimed_at(CID, 2**200) is None


# --- helpers -------------------------------------------------------------------------------------


def _voucher_sig(cumulative: int) -> bytes:
    from channel.messages import Voucher

    return Signer(PAYER_KEY).sign(DOMAIN, Voucher(CID, cumulative))


def _service(engine: Engine, *, create: bool = True) -> PayeeService:
    store = PayeeStore(engine)
    source = InMemoryChannelSource([make_onchain(CID, deposit=10**30)])
    if create:
        store.upsert_channel(make_onchain(CID, deposit=10**30))
    return PayeeService(store, Signer(PAYEE_KEY), DOMAIN, source, min_challenge_period=3600)


def test_receipt_signature_verifies(engine: Engine) -> None:
    from channel.signing import recover

    receipt = _service(engine).accept(CID, "t-9", 4, 4, _voucher_sig(4), now=1)
    msg = Receipt(CID, 4, 4, receipt.task_id)
    assert recover(DOMAIN, msg, receipt.signature) == Signer(PAYEE_KEY).address


# --- v2: revision, consents, tasks, receipts paging ----------------------------------------------


def _consent(store: PayeeStore, deadline: int = 5_000) -> bool:
    state = store.channel(CID)
    assert state is not None
    return store.record_consent(state, StoredConsent(state.accepted, deadline, b"\x07" * 65))


def test_a_consent_makes_payments_decided_before_it_lose(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    assert store.accept_payment(pending(0, 10, task=1))
    assert _consent(store)
    # Decided on revision 0, before the consent: its compare-and-set must fail.
    assert not store.accept_payment(pending(10, 11, task=2))
    state = store.channel(CID)
    assert state is not None
    assert (state.accepted, state.consent_deadline, state.revision) == (10, 5_000, 1)
    assert store.consent(CID) == StoredConsent(10, 5_000, b"\x07" * 65)
    # Decided again on the new revision, it may commit (the service checks the deadline).
    assert store.accept_payment(pending(10, 11, task=2, revision=1))


def test_a_consent_for_an_amount_that_moved_is_refused(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    seen = store.channel(CID)
    assert seen is not None
    assert store.accept_payment(pending(0, 10, task=1))
    assert not store.record_consent(seen, StoredConsent(0, 5_000, b"\x07" * 65))
    assert store.consent(CID) is None
    again = store.channel(CID)
    assert again is not None and again.revision == 0


def test_a_consent_deadline_beyond_bigint_is_kept_as_forever(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    assert _consent(store, deadline=2**64 - 1)
    state = store.channel(CID)
    assert state is not None and state.frozen_at(2**63 - 2)


def _request(store: PayeeStore, task: str, amount: int = 5, text: str = "logo") -> Any:
    return store.request_task(
        CID, task_id=task, task_hash=task_id_hash(task), amount=amount, description=text,
        now=1_700_000_000,
    )


def test_task_requests_are_idempotent_and_conflicts_are_refused(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    task, created = _request(store, "t-1")
    assert created and (task.task_id, task.amount, task.status) == ("t-1", 5, "requested")
    again, created = _request(store, "t-1")
    assert not created and again == task
    with pytest.raises(TaskConflict, match="for 5"):
        _request(store, "t-1", amount=6)
    with pytest.raises(TaskConflict, match="description"):
        _request(store, "t-1", text="other")
    # A task already paid without a request cannot be requested afterwards.
    assert store.accept_payment(pending(0, 3, task=9, revision=1, task_id="paid-first"))
    with pytest.raises(TaskConflict, match="already paid"):
        _request(store, "paid-first", amount=3)
    with pytest.raises(UnknownChannel):
        store.request_task(OTHER, task_id="x", task_hash=task_id_hash("x"), amount=1,
                           description="", now=1)


def test_a_task_request_makes_payments_decided_before_it_lose(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    _request(store, "t-1")  # revision 0 -> 1
    assert not store.accept_payment(pending(0, 5, task=1, task_id="t-1"))


def test_paying_a_requested_task_marks_it_paid_with_its_receipt(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    _request(store, "t-1", amount=5)
    _request(store, "t-2", amount=7)
    paying = pending(0, 5, task=0, revision=2, task_id="t-1", requested=True)
    assert store.accept_payment(paying, now=42.0)
    first, second = store.tasks(CID)
    assert (first.task_id, first.status, second.task_id, second.status) == (
        "t-1", "paid", "t-2", "requested")
    assert first.receipt is not None
    assert (first.receipt.amount, first.receipt.cumulative_amount) == (5, 5)
    assert first.receipt.receipt_signature == b"\x02" * 65
    assert second.receipt is None
    assert [t.task_id for t in store.tasks(CID, "requested")] == ["t-2"]
    assert [t.task_id for t in store.tasks(CID, "paid")] == ["t-1"]


def test_receipts_page_in_numeric_cumulative_order(store: PayeeStore) -> None:
    store.upsert_channel(make_onchain(CID))
    amounts = [9, 10, 11, 2**200, 2**200 + 1]
    previous = 0
    for i, amount in enumerate(amounts):
        assert store.accept_payment(pending(previous, amount, task=i))
        previous = amount
    page, after = store.receipts(CID, limit=2)
    assert [p.cumulative_amount for p in page] == [9, 10] and after == 10
    page, after = store.receipts(CID, after=after, limit=2)
    assert [p.cumulative_amount for p in page] == [11, 2**200] and after == 2**200
    page, after = store.receipts(CID, after=after, limit=2)
    assert [p.cumulative_amount for p in page] == [2**200 + 1] and after is None
    # `after` is exclusive, and exactly a page's worth leaves no empty page behind.
    page, after = store.receipts(CID, after=11, limit=2)
    assert [p.cumulative_amount for p in page] == [2**200, 2**200 + 1] and after is None
    assert store.receipts(CID, after=2**200 + 1) == ([], None)


_ = (ChannelStatus, OnchainChannel, Domain)
