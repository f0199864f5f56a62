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

Tables: ``channels`` (chain mirror + latest accepted voucher), ``payments`` (one row per
accepted payment), ``chain_cursor`` (last processed block + hash, for reorg detection),
``outgoing_transactions``, ``payer_vouchers`` / ``payer_receipts`` (the payer's own store),
and ``state_changes`` (chain state changes for replay; payments are their own log).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from channel.errors import ConfigError, StoreError
from channel.messages import MAX_UINT256
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
    "OutgoingTransaction",
    "PayeeStore",
    "PayerReceipt",
    "PayerStore",
    "PayerVoucher",
    "PaymentRow",
    "PendingPayment",
    "StateChangeRow",
    "StoredPayment",
    "make_engine",
    "metadata",
    "migrate",
    "prior_of",
]

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
    close_consented: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
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


class StateChangeRow(_Base, table=True):
    """Chain state changes in arrival order, JSON-encoded, so state can be replayed."""

    __tablename__ = "state_changes"

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(max_length=66, index=True)
    kind: str = Field(max_length=32)
    data: str
    created_at: float


# --- engine and migrations -------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Every new connection: WAL lets readers run beside the writer; FULL fsyncs the WAL at each
    # commit, so a receipt is only returned for a payment that survives power loss.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets its directory created and the PRAGMAs above."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        database = sa_url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("isolation_level", None)
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(sa_url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
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
class PendingPayment:
    """A payment the service decided to accept, with the receipt it will return after commit."""

    event: PaymentAccepted
    task_id: str
    receipt_signature: bytes


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# whole and may simply be redone.
_RETRYABLE_SQLSTATES: Final = frozenset({"40P01", "40001"})


class _LostRaceError(Exception):
    """Internal: the compare-and-set matched no row; the transaction must roll back."""


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


_channels = ChannelRow.__table__  # type: ignore[attr-defined]
_payments = PaymentRow.__table__  # type: ignore[attr-defined]
_cursor = ChainCursor.__table__  # type: ignore[attr-defined]
_outgoing = OutgoingTransaction.__table__  # type: ignore[attr-defined]
_payer_vouchers = PayerVoucher.__table__  # type: ignore[attr-defined]
_payer_receipts = PayerReceipt.__table__  # type: ignore[attr-defined]
_state_changes = StateChangeRow.__table__  # type: ignore[attr-defined]

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
_CAS_UPDATE = (
    _channels.update()
    .where(
        _channels.c.channel_id == sa.bindparam("cid"),
        _channels.c.accepted == sa.bindparam("prev", type_=U256()),
        # A close consent makes the accepted amount final (see PayeeStore.consent_to_close).
        _channels.c.close_consented.is_(sa.false()),
    )
    .values(
        accepted=sa.bindparam("new", type_=U256()),
        voucher_signature=sa.bindparam("sig"),
        updated_at=sa.bindparam("now"),
    )
)
_INSERT_PAYMENT = _payments.insert()


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
        close_consented=bool(row.close_consented),
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


class PayeeStore:
    """The payee's tables. Thread-safe (one connection per call from the engine's pool)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- reads ---------------------------------------------------------------------------

    def channel(self, channel_id: bytes) -> PayeeChannelState | None:
        """The stored channel state, or None if this channel was never stored."""
        with self.engine.connect() as conn:
            row = conn.execute(_SELECT_CHANNEL, {"cid": _hex(channel_id)}).first()
        return None if row is None else _state_from_row(row)

    def _read(self) -> Connection:
        """A connection whose transactions are read-only snapshots (DEFERRED on SQLite)."""
        return self.engine.connect().execution_options(piecework_read_only=True)

    def load(
        self, channel_id: bytes, task_hash: bytes
    ) -> tuple[PayeeChannelState | None, StoredPayment | None]:
        """The channel and the payment already stored for this task (if any), in one snapshot."""
        cid = _hex(channel_id)
        with self._read() as conn, conn.begin():
            row = conn.execute(_SELECT_CHANNEL, {"cid": cid}).first()
            if row is None:
                return None, None
            pay = conn.execute(_SELECT_PAYMENT, {"cid": cid, "th": _hex(task_hash)}).first()
        return _state_from_row(row), None if pay is None else _payment_from_row(pay)

    def load_many(
        self, keys: Iterable[tuple[bytes, bytes]]
    ) -> tuple[dict[bytes, PayeeChannelState], dict[tuple[bytes, bytes], StoredPayment]]:
        """Channels and stored payments for many ``(channel_id, task_hash)`` pairs, 2 queries."""
        wanted = set(keys)
        cids = sorted({_hex(c) for c, _ in wanted})
        ths = sorted({_hex(t) for _, t in wanted})
        if not wanted:
            return {}, {}
        with self._read() as conn, conn.begin():
            rows = conn.execute(_SELECT_CHANNELS, {"cids": cids}).all()
            pays = conn.execute(_SELECT_PAYMENTS, {"cids": cids, "ths": ths}).all()
        states = {s.channel_id: s for s in map(_state_from_row, rows)}
        payments = {}
        for pay in map(_payment_from_row, pays):
            if (pay.channel_id, pay.task_hash) in wanted:
                payments[pay.channel_id, pay.task_hash] = pay
        return states, payments

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

    def consent_to_close(self, channel_id: bytes) -> PayeeChannelState:
        """Freeze the channel's accepted amount for a ``CloseConsent`` and return the state.

        After this no payment can commit on the channel (the compare-and-set requires
        ``close_consented`` to be false), so the amount the consent is signed for is the last
        one the payee will ever accept: a payer closing with it cannot leave later receipts
        unpaid. The flag is set and read in one transaction, serialized with payments.
        """
        cid = _hex(channel_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _channels.update()
                    .where(_channels.c.channel_id == cid)
                    .values(close_consented=True)
                )
                row = conn.execute(_SELECT_CHANNEL, {"cid": cid}).first()
        except OperationalError as exc:
            raise StoreError(f"database refused the close consent: {exc.orig}") from exc
        if row is None:
            raise StoreError(f"channel {cid} is not stored")
        return _state_from_row(row)

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
        the database refuses. Payments of one channel must be in order, each extending the
        previous (``ValueError`` otherwise: a caller bug, not a race).
        """
        if not batch:
            return True
        now = time.time() if now is None else now
        updates: dict[bytes, dict[str, Any]] = {}
        rows = []
        for p in batch:
            e = p.event
            sig = _hex(e.voucher_signature)
            cas = updates.get(e.channel_id)
            if cas is None:
                cas = updates[e.channel_id] = {"cid": _hex(e.channel_id), "prev": e.previous}
            elif cas["new"] != e.previous:
                raise ValueError(f"payments for {cas['cid']} are not consecutive in the batch")
            cas.update(new=e.cumulative_amount, sig=sig, now=now)
            rows.append(
                {
                    "channel_id": cas["cid"],
                    "task_id": p.task_id,
                    "task_hash": _hex(e.task_hash),
                    "amount": e.amount,
                    "cumulative_amount": e.cumulative_amount,
                    "voucher_signature": sig,
                    "receipt_signature": _hex(p.receipt_signature),
                    "created_at": now,
                }
            )
        try:
            with self.engine.begin() as conn:
                # The UPDATE is the first write of the transaction, so SQLite takes the write
                # lock here and waits on busy_timeout instead of failing a lock upgrade.
                # Channel rows are locked in one global order (by id): two workers' batches
                # that share channels then queue behind each other instead of deadlocking.
                for _cid, cas in sorted(updates.items()):
                    if conn.execute(_CAS_UPDATE, cas).rowcount != 1:
                        raise _LostRaceError
                conn.execute(_INSERT_PAYMENT, rows)
        except (_LostRaceError, IntegrityError):
            return False
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
                # Rolled back whole by the server: the same as losing the race, re-read.
                return False
            raise StoreError(f"database refused the payment batch: {exc.orig}") from exc
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


class PayerStore:
    """The payer's own records: its latest signed voucher per channel and every receipt."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_voucher(
        self, channel_id: bytes, payee: str, cumulative_amount: int, signature: bytes
    ) -> None:
        """Store a newly signed voucher; an older (lower) one never overwrites a newer one."""
        cid = _hex(channel_id)
        values = {
            "payee": payee,
            "cumulative_amount": cumulative_amount,
            "signature": _hex(signature),
            "updated_at": time.time(),
        }
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(_payer_vouchers.c.cumulative_amount).where(
                    _payer_vouchers.c.channel_id == cid
                )
            ).first()
            if row is None:
                conn.execute(_payer_vouchers.insert(), {"channel_id": cid, **values})
            elif row.cumulative_amount < cumulative_amount:
                conn.execute(
                    _payer_vouchers.update().where(_payer_vouchers.c.channel_id == cid), values
                )

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
