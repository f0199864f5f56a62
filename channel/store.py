"""Durable storage: SQLModel tables, the lossless uint256 column, and the payee's atomic hot path.

SQLite (WAL, ``synchronous=FULL``, ``busy_timeout``) is the embedded default; PostgreSQL
works through its URL. Schema changes go through the Alembic revisions in
``channel/migrations`` (``migrate(url)``); a test proves they equal these models.

The hot path, ``PayeeStore.accept_payments``, writes the payment rows and advances each
channel's accepted cumulative amount with a compare-and-set
(``UPDATE channels SET accepted=:new ... WHERE channel_id=:id AND accepted=:prev``) in the same
transaction, so several processes sharing a database serialise per channel *in the database*:
a writer that lost a race sees rowcount 0, its transaction is rolled back and the caller
re-reads and re-decides (stale voucher or idempotent replay). Nothing is returned before
the transaction commits. It uses SQLAlchemy Core with statements built once, not ORM
objects: the ORM's unit of work costs more than the SQL itself at thousands of rows/s.

The compare-and-set also requires the channel's ``revision`` to be the one the payment was
decided on: a close consent and a task request each bump it in their own transaction, so a
payment decided before either (before the freeze, or before the task's requested amount was
known) cannot commit after it; it is decided again.

Every DB-API error (psycopg's ``DataError`` for a NUL byte, a dropped connection, ...) on the
payee's paths leaves as ``StoreError``, never as a raw driver exception.

Tables: ``channels`` (chain mirror + latest accepted voucher + latest close consent),
``payments`` (one row per accepted payment, with its receipt), ``tasks`` (tasks the payee
requested payment for; the paying receipt is the payment row of the same task),
``chain_cursor`` (last processed block + hash, for reorg detection), ``outgoing_transactions``,
``payer_vouchers`` / ``payer_receipts`` / ``payer_voucher_signers`` (the payer's own store),
and ``state_changes`` (chain state changes for replay; payments are their own log).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Final

import sqlalchemy as sa
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from channel.errors import ConfigError, StoreError, TaskConflict, UnknownChannel
from channel.messages import MAX_UINT256, ZERO_ADDRESS
from channel.state import (
    ChannelStatus,
    OnchainChannel,
    PayeeChannelState,
    PaymentAccepted,
    PriorPayment,
    StateChange,
    decode_change,
    encode_change,
)

__all__ = [
    "U256",
    "ChainCursor",
    "ChannelRow",
    "ClaimRow",
    "OutgoingTransaction",
    "PayeeStore",
    "PayerReceipt",
    "PayerStore",
    "PayerVoucher",
    "PayerVoucherSigner",
    "PaymentRow",
    "PendingPayment",
    "Snapshot",
    "StateChangeRow",
    "StoredConsent",
    "StoredPayment",
    "StoredReceipt",
    "StoredTask",
    "TaskRow",
    "WalCheckpointer",
    "make_engine",
    "metadata",
    "migrate",
    "prior_of",
]

log = logging.getLogger(__name__)

_U256_DIGITS: Final = 78  # len(str(2**256 - 1))


class U256(sa.types.TypeDecorator[int]):
    """A uint256 stored without loss: ``NUMERIC(78,0)`` on PostgreSQL, else zero-padded TEXT.

    SQLite's NUMERIC affinity turns integers above 2**63 into floats, so on SQLite (and any
    other backend) the value is a 78-digit zero-padded decimal string: exact, and ordered
    correctly by plain string comparison.
    """

    impl = sa.String(_U256_DIGITS)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(_U256_DIGITS, 0))
        return dialect.type_descriptor(sa.String(_U256_DIGITS))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UINT256:
            raise StoreError(f"not a uint256: {value!r}")
        if dialect.name == "postgresql":
            return value
        return str(value).zfill(_U256_DIGITS)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return int(value)
        return int(value)


# --- models ----------------------------------------------------------------------------------

# A private registry so create_all/compare never touch tables other modules put on SQLModel's
# global metadata.
_registry = registry(metadata=MetaData())
metadata: Final = _registry.metadata


class _Base(SQLModel, registry=_registry):
    pass


class ChannelRow(_Base, table=True):
    """The on-chain mirror of one channel plus the payee's latest accepted voucher."""

    __tablename__ = "channels"

    channel_id: str = Field(primary_key=True, max_length=66)
    payer: str = Field(max_length=42, index=True)
    payee: str = Field(max_length=42, index=True)
    token: str = Field(max_length=42)
    deposit: int = Field(sa_type=U256)
    claimed: int = Field(sa_type=U256)
    challenge_period: int = Field(sa_type=sa.BigInteger)
    closes_at: int = Field(sa_type=sa.BigInteger)
    status: int
    accepted: int = Field(sa_type=U256)
    voucher_signature: str | None = Field(default=None, max_length=132)
    voucher_signer: str = Field(
        default=ZERO_ADDRESS, max_length=42, sa_column_kwargs={"server_default": ZERO_ADDRESS}
    )
    consent_amount: int | None = Field(default=None, sa_type=U256)
    consent_deadline: int | None = Field(default=None, sa_type=sa.BigInteger)
    """Unix seconds (block time); a uint64, stored signed: deadlines past 2**63 are clamped."""
    consent_signature: str | None = Field(default=None, max_length=132)
    revision: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    updated_at: float


class PaymentRow(_Base, table=True):
    """One accepted payment: the voucher that paid it and the receipt we returned."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("channel_id", "task_hash", name="uq_payment_task"),
        # Serves "payments of a channel" and "its oldest unclaimed one" (a range seek on the
        # cumulative amount), so the watcher's claim policy stays O(unclaimed) per channel.
        sa.Index("ix_payments_channel_cumulative", "channel_id", "cumulative_amount"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, foreign_key="channels.channel_id")
    task_id: str = Field(max_length=1024)
    task_hash: str = Field(max_length=66)
    amount: int = Field(sa_type=U256)
    cumulative_amount: int = Field(sa_type=U256)
    voucher_signature: str = Field(max_length=132)
    receipt_signature: str = Field(max_length=132)
    created_at: float


class TaskRow(_Base, table=True):
    """A task the payee asked to be paid for; ``status`` becomes ``paid`` with its payment."""

    __tablename__ = "tasks"
    __table_args__ = (sa.UniqueConstraint("channel_id", "task_hash", name="uq_task"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, foreign_key="channels.channel_id")
    task_id: str = Field(max_length=1024)
    task_hash: str = Field(max_length=66)
    amount: int = Field(sa_type=U256)
    description: str = Field(sa_type=sa.Text)
    status: str = Field(max_length=16)
    requested_at: int = Field(sa_type=sa.BigInteger)
    paid_at: float | None = None


class ChainCursor(_Base, table=True):
    """The last block the watcher processed; its hash detects reorgs."""

    __tablename__ = "chain_cursor"

    name: str = Field(primary_key=True, max_length=64)
    block_number: int = Field(sa_type=sa.BigInteger)
    block_hash: str = Field(max_length=66)
    updated_at: float


class OutgoingTransaction(_Base, table=True):
    """A transaction we send (claim, close, settle): tracked until mined or given up."""

    __tablename__ = "outgoing_transactions"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    channel_ids: str = Field(description="JSON list of 0x channel ids")
    tx_hash: str | None = Field(default=None, max_length=66, index=True)
    nonce: int | None = Field(default=None, sa_type=sa.BigInteger)
    status: str = Field(max_length=16, index=True)
    attempts: int = 0
    last_error: str | None = None
    created_at: float
    updated_at: float


class PayerVoucher(_Base, table=True):
    """The payer's latest signed voucher per channel (its own store)."""

    __tablename__ = "payer_vouchers"

    channel_id: str = Field(primary_key=True, max_length=66)
    payee: str = Field(max_length=42)
    cumulative_amount: int = Field(sa_type=U256)
    signature: str = Field(max_length=132)
    updated_at: float


class PayerReceipt(_Base, table=True):
    """Every receipt the payer got back: proof the payee acknowledged each task."""

    __tablename__ = "payer_receipts"
    __table_args__ = (sa.UniqueConstraint("channel_id", "task_hash", name="uq_receipt_task"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, index=True)
    task_id: str = Field(max_length=1024)
    task_hash: str = Field(max_length=66)
    amount: int = Field(sa_type=U256)
    cumulative_amount: int = Field(sa_type=U256)
    receipt_signature: str = Field(max_length=132)
    created_at: float


class PayerVoucherSigner(_Base, table=True):
    """The payer's voucher signer for a channel, and where its encrypted key lives."""

    __tablename__ = "payer_voucher_signers"

    channel_id: str = Field(primary_key=True, max_length=66)
    address: str = Field(max_length=42)
    keystore: str | None = Field(default=None, description="path of its encrypted keystore")
    created_at: float


class StateChangeRow(_Base, table=True):
    """Chain state changes in arrival order, JSON-encoded, so state can be replayed."""

    __tablename__ = "state_changes"

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, index=True)
    kind: str = Field(max_length=32)
    data: str
    created_at: float


class ClaimRow(_Base, table=True):
    """A ``Claimed`` or ``ChannelClosed`` event of one of our channels: which transaction paid
    the payee up to which cumulative amount (the receipts' ``claim_tx``; see channel/claims.py)."""

    __tablename__ = "claims"
    __table_args__ = (sa.UniqueConstraint("channel_id", "block_number", "log_index",
                                          name="uq_claim_log"),)

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, index=True)
    cumulative_amount: int = Field(sa_type=U256)
    tx_hash: str = Field(max_length=66)
    block_number: int = Field(sa_type=sa.BigInteger, index=True)
    log_index: int


# --- engine and migrations -------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Every new connection: WAL lets readers run beside the writer; FULL fsyncs the WAL at each
    # commit, so a receipt is only returned for a payment that survives power loss.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # 64 MiB of page cache per connection (default 2 MiB): the payments' two indexes grow
    # with every stored payment, and a batch inserts at random places in the unique
    # (channel, task hash) one; pages not cached are read back from the OS on every batch.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own implicit BEGIN is disabled (isolation_level=None) and issued here, so
    # SQLAlchemy's transaction boundaries are the real ones (SQLAlchemy's documented recipe).
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
    # writes fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT, which busy_timeout
    # does not retry) when another connection committed in between, e.g. the watcher's
    # upsert racing the payment path.
    # Reads marked ``_READ_ONLY`` (the hot path's snapshot loads) begin DEFERRED instead: they
    # never write, so they cannot hit that upgrade failure, and they must not queue behind the
    # group committer's write lock (its fsync) while the next batch is being decided.
    if conn.get_execution_options().get("piecework_read_only"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_file(url: sa.URL) -> str | None:
    """The file of a SQLite database URL; None for other backends, memory and ``file:`` URIs."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return database


# With a WalCheckpointer the connections leave checkpoints to it; this many WAL pages (64 MiB)
# still make a commit checkpoint by itself should the checkpointer fall behind or stop.
_FALLBACK_AUTOCHECKPOINT: Final = 16_384


def _no_inline_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA wal_autocheckpoint={_FALLBACK_AUTOCHECKPOINT}")
    cursor.close()


class WalCheckpointer:
    """Copies SQLite's WAL into the database file from a thread of its own.

    By default SQLite checkpoints inside the commit that pushes the WAL past 1,000 pages: that
    commit then also writes those pages to the database file and fsyncs it, and the group
    committer's pipeline (and every payment queued behind it) stalls for it, several times a
    second under load. Here a ``PASSIVE`` checkpoint runs every ``interval`` seconds on a
    connection of its own (it never blocks a reader or the writer, and the sqlite3 module
    releases the GIL while it runs); the engine's connections checkpoint by themselves only
    past ``_FALLBACK_AUTOCHECKPOINT`` pages. Use with an engine made with
    ``make_engine(url, background_checkpoints=True)``; a no-op for other databases.
    """

    def __init__(self, engine: Engine, interval: float = 0.05) -> None:
        self.interval = interval
        self.checkpoints = 0
        """Checkpoints that copied at least one page."""
        self._path = _sqlite_file(engine.url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WalCheckpointer:
        if self._path is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        assert self._path is not None
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.interval):
                try:
                    _busy, _frames, copied = conn.execute(
                        "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # e.g. busy: the next round tries again
                    log.debug("background WAL checkpoint skipped: %s", exc)
                    continue
                if copied > 0:
                    self.checkpoints += 1
        finally:
            conn.close()


def make_engine(url: str, *, background_checkpoints: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets its directory created and the PRAGMAs above.
    ``background_checkpoints``: SQLite leaves WAL checkpoints to a ``WalCheckpointer``."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = _sqlite_file(sa_url)
        if database is not None:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # The most recently used connection first: a lone payment's read and its commit
            # then share one connection and its page cache. Round robin (the default) hands
            # each checkout a connection whose cache another connection's commit has just
            # invalidated. (Only a file database has a queue pool to order.)
            kwargs.setdefault("pool_use_lifo", True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("isolation_level", None)
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(sa_url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        if background_checkpoints:
            event.listen(engine, "connect", _no_inline_checkpoints)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if sa_url.get_backend_name() == "postgresql":
        if sa_url.drivername == "postgresql":
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(sa_url, **kwargs)
    raise ConfigError(f"unsupported database URL scheme {sa_url.drivername!r}")


def migrate(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Run the Alembic migrations in ``channel/migrations`` up to ``revision``."""
    from alembic import command  # noqa: PLC0415 - alembic is only needed when migrating
    from alembic.config import Config  # noqa: PLC0415

    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    if isinstance(url_or_engine, str):
        engine.dispose()


# --- payee store -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredPayment:
    channel_id: bytes
    task_id: str
    task_hash: bytes
    amount: int
    cumulative_amount: int
    voucher_signature: bytes
    receipt_signature: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the payee reads before deciding a batch of payments (``PayeeStore.load_many``)."""

    states: dict[bytes, PayeeChannelState]
    payments: dict[tuple[bytes, bytes], StoredPayment]
    requested: dict[tuple[bytes, bytes], int]
    """Requested amount per ``(channel_id, task_hash)`` of tasks the payee asked payment for."""

    def state(self, channel_id: bytes) -> PayeeChannelState | None:
        return self.states.get(channel_id)


@dataclass(frozen=True, slots=True)
class StoredConsent:
    """The payee's latest ``CloseConsent`` on a channel."""

    cumulative_amount: int
    deadline: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class StoredTask:
    """A requested task and, once paid, the payment (receipt) that paid it."""

    channel_id: bytes
    task_id: str
    task_hash: bytes
    amount: int
    description: str
    status: str
    requested_at: int
    receipt: StoredPayment | None


@dataclass(frozen=True, slots=True)
class PendingPayment:
    """A payment the service decided to accept, with the receipt it will return after commit."""

    event: PaymentAccepted
    task_id: str
    receipt_signature: bytes


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# whole and may simply be redone.
_RETRYABLE_SQLSTATES: Final = frozenset({"40P01", "40001"})


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows of equal length as one list per column (PostgreSQL ``unnest`` arrays)."""
    return [list(col) for col in zip(*rows, strict=True)]


class _LostRaceError(Exception):
    """Internal: the compare-and-set matched no row; the transaction must roll back."""


@contextmanager
def _db_errors(what: str) -> Iterator[None]:
    """Any DB-API error leaves as ``StoreError`` (the message names the driver's class only:
    its text can quote the offending row)."""
    try:
        yield
    except DBAPIError as exc:
        raise StoreError(
            f"database refused {what}: {type(exc.orig).__name__}", kind=type(exc.orig).__name__
        ) from exc


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _rollback(raw: Any, cur: Any, postgres: bool) -> None:
    """Roll a driver-level transaction back; a broken connection is the pool's to discard."""
    try:
        if postgres:
            raw.rollback()
        else:
            cur.execute("ROLLBACK")
    except Exception:  # noqa: S110 - the original error is the one to report
        pass


_channels = ChannelRow.__table__  # type: ignore[attr-defined]
_payments = PaymentRow.__table__  # type: ignore[attr-defined]
_cursor = ChainCursor.__table__  # type: ignore[attr-defined]
_outgoing = OutgoingTransaction.__table__  # type: ignore[attr-defined]
_payer_vouchers = PayerVoucher.__table__  # type: ignore[attr-defined]
_payer_receipts = PayerReceipt.__table__  # type: ignore[attr-defined]
_state_changes = StateChangeRow.__table__  # type: ignore[attr-defined]
_tasks = TaskRow.__table__  # type: ignore[attr-defined]
_payer_signers = PayerVoucherSigner.__table__  # type: ignore[attr-defined]

# Built once: SQLAlchemy caches their compiled form, so the hot path only binds parameters.
_SELECT_CHANNEL = sa.select(_channels).where(_channels.c.channel_id == sa.bindparam("cid"))
_SELECT_PAYMENT = sa.select(_payments).where(
    _payments.c.channel_id == sa.bindparam("cid"), _payments.c.task_hash == sa.bindparam("th")
)
_SELECT_CHANNELS = sa.select(_channels).where(
    _channels.c.channel_id.in_(sa.bindparam("cids", expanding=True))
)
# Candidates only (a payment matching one of the tasks on one of the channels); the exact
# (channel, task) pairs are picked in Python, which keeps this one cached statement.
_SELECT_PAYMENTS = sa.select(_payments).where(
    _payments.c.channel_id.in_(sa.bindparam("cids", expanding=True)),
    _payments.c.task_hash.in_(sa.bindparam("ths", expanding=True)),
)
_SELECT_TASKS = sa.select(_tasks.c.channel_id, _tasks.c.task_hash, _tasks.c.amount).where(
    _tasks.c.channel_id.in_(sa.bindparam("cids", expanding=True)),
    _tasks.c.task_hash.in_(sa.bindparam("ths", expanding=True)),
)
_CAS_UPDATE = (
    _channels.update()
    .where(
        _channels.c.channel_id == sa.bindparam("cid"),
        _channels.c.accepted == sa.bindparam("prev", type_=U256()),
        # A consent or task request since the decision changes the rules it was decided by.
        _channels.c.revision == sa.bindparam("rev"),
    )
    .values(
        accepted=sa.bindparam("new", type_=U256()),
        voucher_signature=sa.bindparam("sig"),
        updated_at=sa.bindparam("now"),
    )
)
_INSERT_PAYMENT = _payments.insert()
_MARK_TASK_PAID = (
    _tasks.update()
    .where(
        _tasks.c.channel_id == sa.bindparam("cid"),
        _tasks.c.task_hash == sa.bindparam("th"),
        _tasks.c.status == "requested",
    )
    .values(status="paid", paid_at=sa.bindparam("now"))
)
# A task and the payment of the same task (its receipt), if any: unique on both sides.
_TASKS_WITH_RECEIPTS = sa.select(
    _tasks,
    _payments.c.cumulative_amount.label("paid_cumulative"),
    _payments.c.amount.label("paid_amount"),
    _payments.c.voucher_signature.label("paid_voucher_signature"),
    _payments.c.receipt_signature.label("paid_receipt_signature"),
    _payments.c.created_at.label("paid_created_at"),
).select_from(
    _tasks.outerjoin(
        _payments,
        sa.and_(
            _payments.c.channel_id == _tasks.c.channel_id,
            _payments.c.task_hash == _tasks.c.task_hash,
        ),
    )
)
# Deadlines are uint64 but stored in a signed BIGINT: a later one is as good as forever.
_MAX_BIGINT: Final = 2**63 - 1
_BUMP_REVISION = (
    _channels.update()
    .where(_channels.c.channel_id == sa.bindparam("cid"))
    .values(revision=_channels.c.revision + 1)
)


def _state_from_row(row: Any) -> PayeeChannelState:
    sig = row.voucher_signature
    return PayeeChannelState(
        channel_id=bytes.fromhex(row.channel_id[2:]),
        payer=row.payer,
        payee=row.payee,
        token=row.token,
        deposit=row.deposit,
        claimed=row.claimed,
        challenge_period=row.challenge_period,
        closes_at=row.closes_at,
        status=ChannelStatus(row.status),
        accepted=row.accepted,
        voucher_signature=bytes.fromhex(sig[2:]) if sig else None,
        voucher_signer=row.voucher_signer,
        consent_deadline=row.consent_deadline,
        revision=int(row.revision),
    )


def _payment_from_row(row: Any) -> StoredPayment:
    return StoredPayment(
        channel_id=bytes.fromhex(row.channel_id[2:]),
        task_id=row.task_id,
        task_hash=bytes.fromhex(row.task_hash[2:]),
        amount=row.amount,
        cumulative_amount=row.cumulative_amount,
        voucher_signature=bytes.fromhex(row.voucher_signature[2:]),
        receipt_signature=bytes.fromhex(row.receipt_signature[2:]),
        created_at=row.created_at,
    )


def _task_from_row(row: Any) -> StoredTask:
    channel_id = bytes.fromhex(row.channel_id[2:])
    task_hash = bytes.fromhex(row.task_hash[2:])
    receipt = None
    if row.paid_receipt_signature is not None:
        receipt = StoredPayment(
            channel_id=channel_id,
            task_id=row.task_id,
            task_hash=task_hash,
            amount=row.paid_amount,
            cumulative_amount=row.paid_cumulative,
            voucher_signature=bytes.fromhex(row.paid_voucher_signature[2:]),
            receipt_signature=bytes.fromhex(row.paid_receipt_signature[2:]),
            created_at=row.paid_created_at,
        )
    return StoredTask(
        channel_id=channel_id,
        task_id=row.task_id,
        task_hash=task_hash,
        amount=row.amount,
        description=row.description,
        status=row.status,
        requested_at=int(row.requested_at),
        receipt=receipt,
    )


_CHANNEL_COLUMNS: Final = (
    "channel_id", "payer", "payee", "token", "deposit", "claimed", "challenge_period",
    "closes_at", "status", "accepted", "voucher_signature", "voucher_signer",
    "consent_deadline", "revision",
)
_PAYMENT_COLUMNS: Final = (
    "channel_id", "task_id", "task_hash", "amount", "cumulative_amount", "voucher_signature",
    "receipt_signature", "created_at",
)


class _WriterLock:
    """Queues one SQLite database's hot-path write transactions, across the threads of this
    process (a mutex) and across processes (``flock`` on a file beside the database).

    A writer blocked in ``flock`` wakes the moment the holder unlocks. SQLite's own busy
    handler instead polls, sleeping 1, 2, 5 ... up to 100 ms between tries, so two workers'
    committers meeting at the write lock cost each other tens of milliseconds at a time (the
    2-worker bench's p99 was 600 ms). Writers that do not take this lock (the watcher, the
    API's rarer writes) still meet the others at SQLite's lock, as before.
    """

    _made: ClassVar[dict[tuple[str, int], _WriterLock]] = {}
    _made_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self._mutex = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def beside(cls, database: str) -> _WriterLock:
        """The lock of ``database`` for this process (one per process: a forked child must
        not share its parent's open file, or ``flock`` would not keep them apart)."""
        path = str(Path(database).expanduser().resolve()) + "-writers.lock"
        key = (path, os.getpid())
        with cls._made_lock:
            lock = cls._made.get(key)
            if lock is None:
                lock = cls._made[key] = cls(path)
            return lock

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._mutex:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)


class _DriverSQL:
    """The payment hot path's statements at the DB-API level (sqlite3 or psycopg), no
    SQLAlchemy statement, compilation or result object per call: on a lone payment those cost
    more than the SQL (measured: load_many 290 -> see the commit). Values are converted here
    exactly as ``U256`` does (zero-padded TEXT on SQLite, NUMERIC on PostgreSQL)."""

    def __init__(self, engine: Engine, *, serialize_writers: bool = False) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.dbapi: Any = engine.dialect.dbapi
        self.mark = "%s" if self.postgres else "?"
        database = _sqlite_file(engine.url)
        self._writers = (
            _WriterLock.beside(database) if serialize_writers and database is not None else None
        )
        m = self.mark
        # Only constant column names and placeholders are formatted into these statements.
        self.cas_update = (
            f"UPDATE channels SET accepted={m}, voucher_signature={m}, updated_at={m} "  # noqa: S608
            f"WHERE channel_id={m} AND accepted={m} AND revision={m}"
        )
        # PostgreSQL only: a whole batch per statement (accept_payments).
        self.lock_channels = (
            "SELECT 1 FROM channels WHERE channel_id = ANY(%s) ORDER BY channel_id FOR UPDATE"
        )
        self.bulk_cas_update = (
            "UPDATE channels AS c SET accepted = v.new, voucher_signature = v.sig, "
            "updated_at = v.now FROM unnest(%s::numeric[], %s::text[], %s::float8[], "
            "%s::text[], %s::numeric[], %s::bigint[]) AS v(new, sig, now, cid, prev, rev) "
            "WHERE c.channel_id = v.cid AND c.accepted = v.prev AND c.revision = v.rev"
        )
        self.bulk_insert_payments = (
            f"INSERT INTO payments ({', '.join(_PAYMENT_COLUMNS)}) "  # noqa: S608
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::numeric[], "
            "%s::numeric[], %s::text[], %s::text[], %s::float8[])"
        )
        self.insert_payment = (
            f"INSERT INTO payments ({', '.join(_PAYMENT_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join([m] * len(_PAYMENT_COLUMNS))})"
        )
        self.mark_task_paid = (
            f"UPDATE tasks SET status='paid', paid_at={m} "  # noqa: S608
            f"WHERE channel_id={m} AND task_hash={m} AND status='requested'"
        )

        # The payer's hot path (PayerStore.record_voucher).
        self.raise_voucher = (
            f"UPDATE payer_vouchers SET cumulative_amount={m}, payee={m}, signature={m}, "  # noqa: S608
            f"updated_at={m} WHERE channel_id={m} AND cumulative_amount < {m}"
        )
        self.voucher_exists = f"SELECT 1 FROM payer_vouchers WHERE channel_id={m}"  # noqa: S608
        self.insert_voucher = (
            "INSERT INTO payer_vouchers (channel_id, payee, cumulative_amount, signature, "  # noqa: S608
            f"updated_at) VALUES ({m}, {m}, {m}, {m}, {m})"
        )
        self.receipt_exists = (
            f"SELECT 1 FROM payer_receipts WHERE channel_id={m} AND task_hash={m}"  # noqa: S608
        )
        self.insert_receipt = (
            "INSERT INTO payer_receipts (channel_id, task_id, task_hash, amount, "  # noqa: S608
            f"cumulative_amount, receipt_signature, created_at) VALUES ({m}, {m}, {m}, {m}, {m}, "
            f"{m}, {m})"
        )

    def u256(self, value: int) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UINT256:
            raise StoreError(f"not a uint256: {value!r}")
        return value if self.postgres else str(value).zfill(_U256_DIGITS)

    def marks(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection's driver connection; on SQLite the driver is in autocommit
        mode (``isolation_level=None``), so transactions are begun by hand."""
        with self.engine.connect() as conn:
            yield conn.connection.driver_connection

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A cursor inside one write transaction, committed when the block ends (on SQLite
        ``COMMIT`` is the WAL's fsync under synchronous=FULL), rolled back if it raises.
        SQLite's ``BEGIN IMMEDIATE`` takes the write lock up front (waiting on busy_timeout)
        instead of failing a lock upgrade later; with ``serialize_writers`` the store's own
        write transactions queue on a ``_WriterLock`` first."""
        with (self._writers.held() if self._writers else nullcontext()), \
                self.connection() as raw:
            cur = raw.cursor()
            try:
                if not self.postgres:
                    cur.execute("BEGIN IMMEDIATE")
                committed = False
                try:
                    yield cur
                    if self.postgres:
                        raw.commit()
                    else:
                        cur.execute("COMMIT")
                    committed = True
                finally:
                    if not committed:
                        _rollback(raw, cur, self.postgres)
            finally:
                cur.close()

    def select_channels(self, cur: Any, cids: Sequence[str]) -> list[Any]:
        cur.execute(
            f"SELECT {', '.join(_CHANNEL_COLUMNS)} FROM channels "  # noqa: S608 - constants and placeholders only
            f"WHERE channel_id IN ({self.marks(len(cids))})", cids)
        return [_ChannelTuple(row) for row in cur.fetchall()]

    # The (channel, task hash) pairs are joined as a list of keys: one unique-index probe per
    # pair. ``channel_id IN (...) AND task_hash IN (...)`` probed every combination (64 x 64
    # for a batch of 64 on as many channels), which at 1M stored payments cost 5x the rest.

    def select_payments(self, cur: Any, pairs: Sequence[tuple[str, str]]) -> list[Any]:
        columns = ", ".join(f"p.{c}" for c in _PAYMENT_COLUMNS)
        cur.execute(self._join_keys(f"SELECT {columns}", "payments", len(pairs)),
                    self._key_params(pairs))
        return [_PaymentTuple(row) for row in cur.fetchall()]

    def select_tasks(self, cur: Any, pairs: Sequence[tuple[str, str]]) -> list[Any]:
        cur.execute(self._join_keys("SELECT p.channel_id, p.task_hash, p.amount", "tasks",
                                    len(pairs)), self._key_params(pairs))
        return cur.fetchall()  # type: ignore[no-any-return]

    def _join_keys(self, select: str, table: str, n: int) -> str:
        """``select`` from ``table`` (as ``p``) joined to ``n`` (channel_id, task_hash) keys."""
        on = f"JOIN {table} p ON p.channel_id = k.c AND p.task_hash = k.t"
        if self.postgres:
            return f"{select} FROM unnest(%s::text[], %s::text[]) AS k(c, t) {on}"
        keys = ", ".join(["(?, ?)"] * n)
        return f"WITH k(c, t) AS (VALUES {keys}) {select} FROM k {on}"

    def _key_params(self, pairs: Sequence[tuple[str, str]]) -> list[Any]:
        if self.postgres:
            return [[c for c, _ in pairs], [t for _, t in pairs]]
        return [x for pair in pairs for x in pair]


def _row_type(name: str, columns: Sequence[str], u256: Sequence[str]) -> type:
    """A tuple subclass with one property per column, U256 ones converted to ``int``."""
    namespace: dict[str, Any] = {"__slots__": ()}
    for i, column in enumerate(columns):
        namespace[column] = _column(i, column in u256)
    return type(name, (tuple,), namespace)


def _column(i: int, u256: bool) -> property:
    def get(row: tuple[Any, ...]) -> Any:
        return int(row[i]) if u256 else row[i]

    return property(get)


_ChannelTuple: Any = _row_type("_ChannelTuple", _CHANNEL_COLUMNS,
                               ("deposit", "claimed", "accepted"))
_PaymentTuple: Any = _row_type("_PaymentTuple", _PAYMENT_COLUMNS,
                               ("amount", "cumulative_amount"))


class PayeeStore:
    """The payee's tables. Thread-safe (one connection per call from the engine's pool)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sql = _DriverSQL(engine, serialize_writers=True)

    # --- reads ---------------------------------------------------------------------------

    def channel(self, channel_id: bytes) -> PayeeChannelState | None:
        """The stored channel state, or None if this channel was never stored."""
        with self.engine.connect() as conn:
            row = conn.execute(_SELECT_CHANNEL, {"cid": _hex(channel_id)}).first()
        return None if row is None else _state_from_row(row)

    def _read(self) -> Connection:
        """A connection whose transactions are read-only snapshots (DEFERRED on SQLite)."""
        return self.engine.connect().execution_options(piecework_read_only=True)

    def load(self, channel_id: bytes, task_hash: bytes) -> Snapshot:
        """The channel, the payment already stored for this task and the task's requested
        amount (if any), in one read-only snapshot."""
        return self.load_many([(channel_id, task_hash)])

    def load_many(self, keys: Iterable[tuple[bytes, bytes]]) -> Snapshot:
        """Channels, stored payments and requested amounts for many ``(channel_id, task_hash)``
        pairs, in one read-only snapshot (two queries, three when a channel has tasks)."""
        wanted = set(keys)
        if not wanted:
            return Snapshot({}, {}, {})
        pairs = sorted({(_hex(c), _hex(t)) for c, t in wanted})
        cids = sorted({c for c, _ in pairs})
        sql = self._sql
        try:
            with _db_errors("the payment lookup"), sql.connection() as raw:
                cur = raw.cursor()
                begun = False
                try:
                    # One snapshot for all three reads. DEFERRED on SQLite: a read never
                    # queues behind the group committer's write lock (its fsync).
                    if not sql.postgres:
                        cur.execute("BEGIN")
                        begun = True
                    rows = sql.select_channels(cur, cids)
                    pays = sql.select_payments(cur, pairs)
                    # A task request bumps its channel's revision in the same transaction, so
                    # a channel still at revision 0 (most of them: metered use) has no tasks.
                    asked = {r.channel_id for r in rows if r.revision}
                    tasks = sql.select_tasks(cur, [p for p in pairs if p[0] in asked]) \
                        if asked else []
                finally:
                    try:
                        if sql.postgres:
                            raw.rollback()  # a read: nothing to keep
                        elif begun:
                            cur.execute("ROLLBACK")
                    finally:
                        cur.close()
        except sql.dbapi.Error as exc:
            raise StoreError(f"database refused the payment lookup: {type(exc).__name__}",
                             kind=type(exc).__name__) from exc
        states = {s.channel_id: s for s in map(_state_from_row, rows)}
        payments = {}
        for pay in map(_payment_from_row, pays):
            if (pay.channel_id, pay.task_hash) in wanted:
                payments[pay.channel_id, pay.task_hash] = pay
        requested = {}
        for task_cid, task_th, task_amount in tasks:
            key = (bytes.fromhex(task_cid[2:]), bytes.fromhex(task_th[2:]))
            if key in wanted:
                requested[key] = int(task_amount)
        return Snapshot(states, payments, requested)

    def payment(self, channel_id: bytes, task_hash: bytes) -> StoredPayment | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                _SELECT_PAYMENT, {"cid": _hex(channel_id), "th": _hex(task_hash)}
            ).first()
        return None if row is None else _payment_from_row(row)

    def payments(self, channel_id: bytes) -> list[StoredPayment]:
        """Every payment on the channel, oldest first."""
        query = (
            sa.select(_payments)
            .where(_payments.c.channel_id == _hex(channel_id))
            .order_by(_payments.c.id)
        )
        with self.engine.connect() as conn:
            return [_payment_from_row(r) for r in conn.execute(query)]

    def channels(self) -> list[PayeeChannelState]:
        with self.engine.connect() as conn:
            return [_state_from_row(r) for r in conn.execute(sa.select(_channels))]

    def oldest_unclaimed_at(self, channel_id: bytes, claimed: int) -> float | None:
        """When the oldest payment not yet covered by ``claimed`` was accepted, or None."""
        query = sa.select(sa.func.min(_payments.c.created_at)).where(
            _payments.c.channel_id == _hex(channel_id),
            _payments.c.cumulative_amount > claimed,
        )
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else float(value)

    # --- chain mirror --------------------------------------------------------------------

    def upsert_channel(self, ch: OnchainChannel, now: float | None = None) -> PayeeChannelState:
        """Insert or refresh a channel's chain fields; the accepted amount never goes down."""
        now = time.time() if now is None else now
        cid = _hex(ch.channel_id)
        chain_fields = {
            "deposit": ch.deposit,
            "claimed": ch.claimed,
            "challenge_period": ch.challenge_period,
            "closes_at": ch.closes_at,
            "status": int(ch.status),
            "updated_at": now,
        }
        for _attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    row = conn.execute(_SELECT_CHANNEL, {"cid": cid}).first()
                    if row is None:
                        conn.execute(
                            _channels.insert(),
                            {
                                "channel_id": cid,
                                "payer": ch.payer,
                                "payee": ch.payee,
                                "token": ch.token,
                                "accepted": ch.claimed,
                                "voucher_signature": None,
                                # Fixed for the channel's life: written once, never updated
                                # (a closed channel reads back zeroed).
                                "voucher_signer": ch.voucher_signer,
                                **chain_fields,
                            },
                        )
                    else:
                        values = dict(chain_fields)
                        if ch.claimed > row.accepted:
                            values["accepted"] = ch.claimed
                        conn.execute(
                            _channels.update().where(_channels.c.channel_id == cid), values
                        )
                break
            except IntegrityError:
                continue  # inserted concurrently by another worker: refresh it instead
        state = self.channel(ch.channel_id)
        if state is None:  # pragma: no cover - we just wrote it
            raise StoreError(f"channel {cid} vanished after upsert")
        return state

    def consent(self, channel_id: bytes) -> StoredConsent | None:
        """The latest close consent the payee signed on the channel, or None."""
        query = sa.select(
            _channels.c.consent_amount, _channels.c.consent_deadline, _channels.c.consent_signature
        ).where(_channels.c.channel_id == _hex(channel_id))
        with _db_errors("the consent lookup"), self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.consent_deadline is None or row.consent_signature is None:
            return None
        return StoredConsent(
            row.consent_amount, row.consent_deadline, bytes.fromhex(row.consent_signature[2:])
        )

    def record_consent(
        self, state: PayeeChannelState, consent: StoredConsent, now: float | None = None
    ) -> bool:
        """Store a new consent for ``state.accepted`` and freeze the channel, atomically.

        A compare-and-set on the accepted amount and the revision ``state`` was read at: False
        when a payment (or another consent or task request) got there first; the caller
        re-reads. Bumping the revision makes every payment decided before the consent lose
        its own compare-and-set, so none can commit after the consent was handed out.
        """
        if consent.cumulative_amount != state.accepted:
            raise ValueError("a consent is only ever for the latest accepted amount")
        update = (
            _channels.update()
            .where(
                _channels.c.channel_id == _hex(state.channel_id),
                _channels.c.accepted == sa.bindparam("prev", type_=U256()),
                _channels.c.revision == state.revision,
            )
            .values(
                consent_amount=sa.bindparam("amount", type_=U256()),
                consent_deadline=min(consent.deadline, _MAX_BIGINT),
                consent_signature=_hex(consent.signature),
                revision=_channels.c.revision + 1,
                updated_at=time.time() if now is None else now,
            )
        )
        with _db_errors("the close consent"), self.engine.begin() as conn:
            result = conn.execute(
                update, {"prev": state.accepted, "amount": consent.cumulative_amount}
            )
            return bool(result.rowcount == 1)

    # --- tasks ---------------------------------------------------------------------------

    def request_task(
        self,
        channel_id: bytes,
        *,
        task_id: str,
        task_hash: bytes,
        amount: int,
        description: str,
        now: int,
    ) -> tuple[StoredTask, bool]:
        """Record a task request; ``(task, created)``. The same request again returns the
        stored task with ``created`` False; the same task id with another amount or description,
        or one already paid without a request, is a ``TaskConflict``.

        The channel row is written first (its revision bumped), which serializes the request
        with payments on the channel: a payment decided before it loses its compare-and-set and
        is decided again, now against the requested amount.
        """
        cid = _hex(channel_id)
        th = _hex(task_hash)
        for _attempt in range(3):
            try:
                with _db_errors("the task request"), self.engine.begin() as conn:
                    existing = self._task_row(conn, cid, th)
                    if existing is not None:
                        return self._same_task(existing, amount, description), False
                    if conn.execute(_BUMP_REVISION, {"cid": cid}).rowcount != 1:
                        raise UnknownChannel(f"channel {cid} is not stored", channel=cid)
                    paid = conn.execute(_SELECT_PAYMENT, {"cid": cid, "th": th}).first()
                    if paid is not None:
                        raise TaskConflict(
                            f"task {task_id!r} was already paid ({paid.amount}) without a "
                            "request",
                            task=th,
                        )
                    conn.execute(
                        _tasks.insert(),
                        {
                            "channel_id": cid,
                            "task_id": task_id,
                            "task_hash": th,
                            "amount": amount,
                            "description": description,
                            "status": "requested",
                            "requested_at": now,
                        },
                    )
                    row = self._task_row(conn, cid, th)
            except StoreError as exc:
                if isinstance(exc.__cause__, IntegrityError):
                    continue  # the same task inserted concurrently: read it back
                raise
            if row is None:  # pragma: no cover - inserted just above
                raise StoreError(f"task {th} vanished after insert")
            return _task_from_row(row), True
        raise StoreError(f"task {th} on {cid} kept racing; retry")

    @staticmethod
    def _task_row(conn: Connection, cid: str, th: str) -> Any:
        return conn.execute(
            _TASKS_WITH_RECEIPTS.where(_tasks.c.channel_id == cid, _tasks.c.task_hash == th)
        ).first()

    @staticmethod
    def _same_task(row: Any, amount: int, description: str) -> StoredTask:
        task = _task_from_row(row)
        if task.amount != amount or task.description != description:
            raise TaskConflict(
                f"task {task.task_id!r} was already requested for {task.amount} with another "
                "description" if task.amount == amount else
                f"task {task.task_id!r} was already requested for {task.amount}, not {amount}",
                task=_hex(task.task_hash),
            )
        return task

    def tasks(self, channel_id: bytes, status: str | None = None) -> list[StoredTask]:
        """The channel's requested tasks, oldest first, each with its receipt once paid."""
        query = _TASKS_WITH_RECEIPTS.where(_tasks.c.channel_id == _hex(channel_id))
        if status is not None:
            query = query.where(_tasks.c.status == status)
        with _db_errors("the task list"), self.engine.connect() as conn:
            return [_task_from_row(r) for r in conn.execute(query.order_by(_tasks.c.id))]

    def receipts(
        self, channel_id: bytes, *, after: int | None = None, limit: int = 500
    ) -> tuple[list[StoredPayment], int | None]:
        """Payments (receipts) with a cumulative amount above ``after``, ascending, at most
        ``limit``; and the ``after`` of the next page, or None on the last page."""
        query = (
            sa.select(_payments)
            .where(_payments.c.channel_id == _hex(channel_id))
            .order_by(_payments.c.cumulative_amount)
            .limit(limit + 1)
        )
        if after is not None:
            query = query.where(_payments.c.cumulative_amount > after)
        with _db_errors("the receipt list"), self.engine.connect() as conn:
            rows = [_payment_from_row(r) for r in conn.execute(query)]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].cumulative_amount if more else None)

    # --- the hot path --------------------------------------------------------------------

    def accept_payment(self, pending: PendingPayment, now: float | None = None) -> bool:
        """Commit one payment atomically; False if another writer got there first (re-read)."""
        return self.accept_payments([pending], now)

    def accept_payments(self, batch: Sequence[PendingPayment], now: float | None = None) -> bool:
        """Commit a batch of payments in ONE transaction (group commit: one fsync for all).

        All or nothing: per channel one compare-and-set from the batch's first ``previous``
        to its last ``cumulative_amount``, then every payment row in one executemany. If any
        channel moved meanwhile (rowcount 0) or a task is already stored (unique key), the
        whole transaction rolls back and False is returned: the caller re-reads and redoes
        the payments one by one. Conflicts are rare, so optimism beats a savepoint per
        payment (two extra statements each). Returns only after COMMIT; ``StoreError`` if
        the database refuses (any DB-API error, e.g. a value the driver cannot bind). Payments
        of one channel must be in order, each extending the previous and decided on the same
        revision (``ValueError`` otherwise: a caller bug, not a race). Requested tasks the
        batch pays are marked paid in the same transaction.
        """
        if not batch:
            return True
        now = time.time() if now is None else now
        sql = self._sql
        updates: dict[bytes, dict[str, Any]] = {}
        rows = []
        paid_tasks = []
        for p in batch:
            e = p.event
            sig = _hex(e.voucher_signature)
            cas = updates.get(e.channel_id)
            if cas is None:
                cas = updates[e.channel_id] = {
                    "cid": _hex(e.channel_id), "prev": e.previous, "rev": e.revision,
                }
            elif cas["new"] != e.previous or cas["rev"] != e.revision:
                raise ValueError(f"payments for {cas['cid']} are not consecutive in the batch")
            cas.update(new=e.cumulative_amount, sig=sig)
            if e.requested:
                paid_tasks.append((now, cas["cid"], _hex(e.task_hash)))
            rows.append((
                cas["cid"], p.task_id, _hex(e.task_hash), sql.u256(e.amount),
                sql.u256(e.cumulative_amount), sig, _hex(p.receipt_signature), now,
            ))
        # Channel rows are locked in one global order (by id): two workers' batches that
        # share channels then queue behind each other instead of deadlocking.
        cas_params = [
            (sql.u256(c["new"]), c["sig"], now, c["cid"], sql.u256(c["prev"]), c["rev"])
            for _cid, c in sorted(updates.items())
        ]
        try:
            with sql.write() as cur:
                if sql.postgres and len(rows) > 1:
                    # Three statements for the whole batch instead of one per channel and
                    # one per payment (each a server-side execution): lock the channel rows
                    # in the global order, compare-and-set them all in one UPDATE (the
                    # locks are already ours, so its own row order cannot deadlock), insert
                    # every payment from arrays.
                    cur.execute(sql.lock_channels, ([c[3] for c in cas_params],))
                    cur.execute(sql.bulk_cas_update, _columns(cas_params))
                    if cur.rowcount != len(cas_params):
                        raise _LostRaceError
                    cur.execute(sql.bulk_insert_payments, _columns(rows))
                else:
                    # One prepared statement for every channel; each matches at most its
                    # own row (the primary key), so the total says whether all of them did.
                    cur.executemany(sql.cas_update, cas_params)
                    if cur.rowcount != len(cas_params):
                        raise _LostRaceError
                    cur.executemany(sql.insert_payment, rows)
                if paid_tasks:
                    cur.executemany(sql.mark_task_paid, paid_tasks)
        except _LostRaceError:
            return False
        except sql.dbapi.IntegrityError:
            return False  # a task already stored: re-read, it is a replay or a conflict
        except sql.dbapi.OperationalError as exc:
            if getattr(exc, "sqlstate", None) in _RETRYABLE_SQLSTATES:
                # Rolled back whole by the server: the same as losing the race, re-read.
                return False
            raise StoreError(
                f"database refused the payment batch: {type(exc).__name__}",
                kind=type(exc).__name__,
            ) from exc
        except (sql.dbapi.Error, DBAPIError) as exc:
            # E.g. psycopg's DataError for a NUL byte in a text column: not a race, and not
            # something a retry of the same batch fixes. The caller redoes the payments alone.
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            raise StoreError(
                f"database refused the payment batch: {type(orig).__name__}",
                kind=type(orig).__name__,
            ) from exc
        return True

    # --- chain cursor, outgoing transactions, state-change log ---------------------------

    def cursor(self, name: str = "default") -> tuple[int, str] | None:
        """``(block_number, block_hash)`` of the last processed block, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_cursor).where(_cursor.c.name == name)).first()
        return None if row is None else (row.block_number, row.block_hash)

    def set_cursor(self, block_number: int, block_hash: str, name: str = "default") -> None:
        values = {"block_number": block_number, "block_hash": block_hash, "updated_at": time.time()}
        with self.engine.begin() as conn:
            updated = conn.execute(_cursor.update().where(_cursor.c.name == name), values)
            if updated.rowcount == 0:
                conn.execute(_cursor.insert(), {"name": name, **values})

    def add_transaction(
        self, kind: str, channel_ids: Iterable[bytes], status: str = "pending"
    ) -> int:
        """Record a transaction about to be sent; returns its id for later updates."""
        now = time.time()
        with self.engine.begin() as conn:
            result = conn.execute(
                _outgoing.insert(),
                {
                    "kind": kind,
                    "channel_ids": json.dumps([_hex(c) for c in channel_ids]),
                    "status": status,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            key = result.inserted_primary_key
            if key is None:  # pragma: no cover
                raise StoreError("no id for the new transaction row")
            return int(key[0])

    def update_transaction(self, tx_id: int, **values: Any) -> None:
        """Set any of ``tx_hash, nonce, status, attempts, last_error`` on a transaction row."""
        allowed = {"tx_hash", "nonce", "status", "attempts", "last_error"}
        unknown = set(values) - allowed
        if unknown:
            raise StoreError(f"unknown transaction fields {sorted(unknown)}")
        with self.engine.begin() as conn:
            conn.execute(
                _outgoing.update().where(_outgoing.c.id == tx_id),
                {**values, "updated_at": time.time()},
            )

    def transactions(self, status: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(_outgoing).order_by(_outgoing.c.id)
        if status is not None:
            query = query.where(_outgoing.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def log_change(self, channel_id: bytes, change: StateChange) -> None:
        """Append a chain state change to the replay log."""
        with self.engine.begin() as conn:
            conn.execute(
                _state_changes.insert(),
                {
                    "channel_id": _hex(channel_id),
                    "kind": type(change).__name__,
                    "data": json.dumps(encode_change(change)),
                    "created_at": time.time(),
                },
            )

    def changes(self, channel_id: bytes) -> list[StateChange]:
        query = (
            sa.select(_state_changes.c.data)
            .where(_state_changes.c.channel_id == _hex(channel_id))
            .order_by(_state_changes.c.id)
        )
        with self.engine.connect() as conn:
            return [decode_change(json.loads(r.data)) for r in conn.execute(query)]


# --- payer store -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A receipt the payer got back, as ``PayerStore`` keeps it."""

    channel_id: bytes
    task_id: str
    task_hash: bytes
    amount: int
    cumulative_amount: int
    receipt_signature: bytes


_RAISE_VOUCHER = (
    _payer_vouchers.update()
    .where(
        _payer_vouchers.c.channel_id == sa.bindparam("cid"),
        _payer_vouchers.c.cumulative_amount < sa.bindparam("new", type_=U256()),
    )
    .values(
        cumulative_amount=sa.bindparam("new", type_=U256()),
        payee=sa.bindparam("new_payee"),
        signature=sa.bindparam("new_signature"),
        updated_at=sa.bindparam("now"),
    )
)
_RECEIPT_STORED = sa.select(sa.literal(1)).where(
    _payer_receipts.c.channel_id == sa.bindparam("cid"),
    _payer_receipts.c.task_hash == sa.bindparam("th"),
)


def _insert_receipt(conn: Connection, r: StoredReceipt) -> None:
    cid, th = _hex(r.channel_id), _hex(r.task_hash)
    if conn.execute(_RECEIPT_STORED, {"cid": cid, "th": th}).first() is not None:
        return  # the same receipt again
    conn.execute(
        _payer_receipts.insert(),
        {
            "channel_id": cid,
            "task_id": r.task_id,
            "task_hash": th,
            "amount": r.amount,
            "cumulative_amount": r.cumulative_amount,
            "receipt_signature": _hex(r.receipt_signature),
            "created_at": time.time(),
        },
    )



class PayerStore:
    """The payer's own records: its latest signed voucher per channel, every receipt, and
    which voucher signer signs for which channel."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sql = _DriverSQL(engine)

    def remember_voucher_signer(
        self, channel_id: bytes, address: str, keystore: str | None = None
    ) -> None:
        """The channel's vouchers are signed by ``address`` (key in ``keystore``, if given)."""
        values = {"address": address, "keystore": keystore, "created_at": time.time()}
        cid = _hex(channel_id)
        with self.engine.begin() as conn:
            updated = conn.execute(
                _payer_signers.update().where(_payer_signers.c.channel_id == cid), values
            )
            if updated.rowcount == 0:
                conn.execute(_payer_signers.insert(), {"channel_id": cid, **values})

    def voucher_signer(self, channel_id: bytes) -> tuple[str, str | None] | None:
        """``(address, keystore path)`` of the channel's voucher signer, or None."""
        query = sa.select(_payer_signers).where(_payer_signers.c.channel_id == _hex(channel_id))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else (row.address, row.keystore)

    def record_voucher(
        self,
        channel_id: bytes,
        payee: str,
        cumulative_amount: int,
        signature: bytes,
        *,
        receipts: Sequence[StoredReceipt] = (),
    ) -> None:
        """Store a newly signed voucher; an older (lower) one never overwrites a newer one.

        ``receipts`` (receipts already received, not yet stored) are written in the same
        transaction: one commit, one fsync, for the voucher about to be sent and the receipts
        of the payments before it (idempotent per channel and task, like ``record_receipt``).
        """
        cid = _hex(channel_id)
        values = {
            "payee": payee,
            "cumulative_amount": cumulative_amount,
            "signature": _hex(signature),
            "updated_at": time.time(),
        }
        # At the DB-API level (see _DriverSQL): SQLAlchemy's statement handling cost more than
        # the commit's fsync here. Committed (synchronous=FULL) before this returns.
        sql = self._sql
        amount = sql.u256(cumulative_amount)
        try:
            with sql.write() as cur:
                # The usual case first: the channel's row exists, this voucher is newer.
                cur.execute(sql.raise_voucher, (amount, payee, values["signature"],
                                                values["updated_at"], cid, amount))
                if cur.rowcount != 1:
                    cur.execute(sql.voucher_exists, (cid,))
                    if cur.fetchone() is None:
                        cur.execute(sql.insert_voucher, (cid, payee, amount,
                                                         values["signature"],
                                                         values["updated_at"]))
                for r in receipts:
                    th = _hex(r.task_hash)
                    cur.execute(sql.receipt_exists, (_hex(r.channel_id), th))
                    if cur.fetchone() is None:  # else the same receipt again
                        cur.execute(sql.insert_receipt, (
                            _hex(r.channel_id), r.task_id, th, sql.u256(r.amount),
                            sql.u256(r.cumulative_amount), _hex(r.receipt_signature),
                            time.time()))
        except (sql.dbapi.Error, DBAPIError) as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            raise StoreError(f"could not record the voucher: {type(orig).__name__}",
                             kind=type(orig).__name__) from exc

    def record_receipts(self, receipts: Sequence[StoredReceipt]) -> None:
        """Keep receipts (one transaction; idempotent per channel and task)."""
        if not receipts:
            return
        with self.engine.begin() as conn:
            for receipt in receipts:
                _insert_receipt(conn, receipt)

    def latest_voucher(self, channel_id: bytes) -> tuple[int, bytes] | None:
        """``(cumulative_amount, signature)`` of the latest voucher signed, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(_payer_vouchers).where(_payer_vouchers.c.channel_id == _hex(channel_id))
            ).first()
        return None if row is None else (row.cumulative_amount, bytes.fromhex(row.signature[2:]))

    def record_receipt(
        self,
        channel_id: bytes,
        *,
        task_id: str,
        task_hash: bytes,
        amount: int,
        cumulative_amount: int,
        receipt_signature: bytes,
    ) -> None:
        """Keep a receipt (idempotent per channel and task)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _payer_receipts.insert(),
                    {
                        "channel_id": _hex(channel_id),
                        "task_id": task_id,
                        "task_hash": _hex(task_hash),
                        "amount": amount,
                        "cumulative_amount": cumulative_amount,
                        "receipt_signature": _hex(receipt_signature),
                        "created_at": time.time(),
                    },
                )
        except IntegrityError:
            pass  # the same receipt again

    def latest_receipt_amount(self, channel_id: bytes) -> int:
        """The highest cumulative amount the payee has receipted on this channel (0 if none)."""
        query = sa.select(sa.func.max(_payer_receipts.c.cumulative_amount)).where(
            _payer_receipts.c.channel_id == _hex(channel_id)
        )
        with self.engine.connect() as conn:
            value = conn.execute(query).scalar()
        return 0 if value is None else int(value)

    def receipts(self, channel_id: bytes) -> list[dict[str, Any]]:
        query = (
            sa.select(_payer_receipts)
            .where(_payer_receipts.c.channel_id == _hex(channel_id))
            .order_by(_payer_receipts.c.id)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def prior_of(payment: StoredPayment | None) -> PriorPayment | None:
    """The state machine's view of a stored payment for the same task."""
    if payment is None:
        return None
    return PriorPayment(payment.cumulative_amount, payment.voucher_signature)
