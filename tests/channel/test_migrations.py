"""Existing databases migrate in place: a v1 database at revision 0003, with data, upgraded to
head on SQLite and PostgreSQL keeps every row and means the same thing under protocol v2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine

from channel.messages import ZERO_ADDRESS, task_id_hash
from channel.store import PayeeStore, PayerStore, make_engine, metadata, migrate

CONSENTED = b"\xc1" * 32
OPEN = b"\xc2" * 32
PAYER = "0x" + "aa" * 20
PAYEE = "0x" + "bb" * 20
BIG = 2**255 + 12345  # beyond BIGINT and float precision: stored exactly or not at all


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _u256(engine: Engine, value: int) -> Any:
    # 0003's storage form: NUMERIC(78,0) on PostgreSQL, zero-padded 78-digit text elsewhere.
    return value if engine.dialect.name == "postgresql" else str(value).zfill(78)


def _hx(b: bytes) -> str:
    return "0x" + b.hex()


def _seed_v1(engine: Engine) -> None:
    """Rows as a v1 service and payer wrote them, through the 0003 schema itself."""
    tables = sa.MetaData()
    tables.reflect(engine)
    channels, payments = tables.tables["channels"], tables.tables["payments"]
    vouchers, receipts = tables.tables["payer_vouchers"], tables.tables["payer_receipts"]
    row = {"payer": PAYER, "payee": PAYEE, "token": ZERO_ADDRESS,
           "deposit": _u256(engine, BIG + 10), "claimed": _u256(engine, 0),
           "challenge_period": 3600, "closes_at": 0, "status": 1, "updated_at": 1.0}
    with engine.begin() as conn:
        conn.execute(channels.insert(), [
            {**row, "channel_id": _hx(CONSENTED), "accepted": _u256(engine, BIG),
             "voucher_signature": "0x" + "11" * 65, "close_consented": True},
            {**row, "channel_id": _hx(OPEN), "accepted": _u256(engine, 7),
             "voucher_signature": "0x" + "22" * 65, "close_consented": False},
        ])
        conn.execute(payments.insert(), [
            {"channel_id": _hx(CONSENTED), "task_id": "old-task",
             "task_hash": _hx(task_id_hash("old-task")), "amount": _u256(engine, BIG),
             "cumulative_amount": _u256(engine, BIG), "voucher_signature": "0x" + "11" * 65,
             "receipt_signature": "0x" + "33" * 65, "created_at": 2.0},
            {"channel_id": _hx(OPEN), "task_id": "ünïcødé",
             "task_hash": _hx(task_id_hash("ünïcødé")), "amount": _u256(engine, 7),
             "cumulative_amount": _u256(engine, 7), "voucher_signature": "0x" + "22" * 65,
             "receipt_signature": "0x" + "44" * 65, "created_at": 3.0},
        ])
        conn.execute(vouchers.insert(), {
            "channel_id": _hx(OPEN), "payee": PAYEE, "cumulative_amount": _u256(engine, 7),
            "signature": "0x" + "22" * 65, "updated_at": 4.0})
        conn.execute(receipts.insert(), {
            "channel_id": _hx(OPEN), "task_id": "ünïcødé",
            "task_hash": _hx(task_id_hash("ünïcødé")), "amount": _u256(engine, 7),
            "cumulative_amount": _u256(engine, 7), "receipt_signature": "0x" + "44" * 65,
            "created_at": 5.0})


def test_a_v1_database_upgrades_in_place(engine: Engine) -> None:
    migrate(engine, "0003")
    _seed_v1(engine)
    migrate(engine)  # to head

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    store = PayeeStore(engine)
    consented, still_open = store.channel(CONSENTED), store.channel(OPEN)
    assert consented is not None and still_open is not None
    # A v1 consent had no deadline: the channel stays frozen at the amount it was given for.
    assert consented.accepted == BIG
    assert consented.frozen_at(2**62)
    assert store.consent(CONSENTED) is None  # v1 never stored the consent's signature
    assert (still_open.accepted, still_open.consent_deadline) == (7, None)
    for state in (consented, still_open):
        assert (state.voucher_signer, state.revision) == (ZERO_ADDRESS, 0)
        assert state.voucher_signature is not None
    # Every payment kept, readable through the v2 receipt listing.
    page, after = store.receipts(CONSENTED)
    assert [(p.task_id, p.amount, p.cumulative_amount) for p in page] == [
        ("old-task", BIG, BIG)] and after is None
    (payment,) = store.payments(OPEN)
    assert (payment.task_id, payment.receipt_signature) == ("ünïcødé", b"\x44" * 65)
    # The payer's side too.
    payer = PayerStore(engine)
    assert payer.latest_voucher(OPEN) == (7, b"\x22" * 65)
    assert payer.latest_receipt_amount(OPEN) == 7
    assert payer.voucher_signer(OPEN) is None
    # And the new tables work on the migrated database.
    task, created = store.request_task(OPEN, task_id="v2", task_hash=task_id_hash("v2"),
                                       amount=3, description="after the upgrade", now=9)
    assert created and store.tasks(OPEN) == [task]


def test_downgrade_keeps_v1_meaning(engine: Engine) -> None:
    migrate(engine, "0003")
    _seed_v1(engine)
    migrate(engine)
    migrate_down(engine, "0003")
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT channel_id, close_consented FROM channels")).all())
    assert {k: bool(v) for k, v in rows.items()} == {_hx(CONSENTED): True, _hx(OPEN): False}


def migrate_down(engine: Engine, revision: str) -> None:
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    import channel.store

    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(channel.store.__file__).with_name("migrations"))
    )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
