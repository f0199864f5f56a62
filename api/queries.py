"""Paged read queries the listing endpoints need and ``channel.store`` does not offer (yet).

Keyset pagination over the store's own tables (no OFFSET, so a page costs the same at any
depth and concurrent inserts never shift it): channels by ``channel_id``, payments by their
row ``id``. Cursors are opaque strings to clients.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from channel.state import ChannelStatus, PayeeChannelState
from channel.store import ChannelRow, PaymentRow, StoredPayment

# The store's own row decoders, so a row has one reading; these queries belong in PayeeStore
# and move there (dropping this adapter) once the core offers paged listing.
from channel.store import _payment_from_row as _payment
from channel.store import _state_from_row as _state

__all__ = ["list_channels", "list_payments", "unclaimed_by_token"]

_channels: Any = ChannelRow.__table__  # type: ignore[attr-defined]
_payments: Any = PaymentRow.__table__  # type: ignore[attr-defined]


def list_channels(
    engine: Engine,
    *,
    payees: Iterable[str],
    limit: int,
    after: bytes | None = None,
    status: ChannelStatus | None = None,
    payer: str | None = None,
) -> tuple[list[PayeeChannelState], bytes | None]:
    """One page of the payees' channels ordered by id, and the cursor of the next page."""
    query = sa.select(_channels).where(_channels.c.payee.in_(list(payees)))
    if after is not None:
        query = query.where(_channels.c.channel_id > "0x" + after.hex())
    if status is not None:
        query = query.where(_channels.c.status == int(status))
    if payer is not None:
        query = query.where(_channels.c.payer == payer)
    query = query.order_by(_channels.c.channel_id).limit(limit + 1)
    with engine.connect() as conn:
        rows = [_state(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].channel_id if more else None)


def list_payments(
    engine: Engine, channel_id: bytes, *, limit: int, after: int = 0
) -> tuple[list[StoredPayment], int | None]:
    """One page of a channel's payments, oldest first, and the cursor (row id) of the next."""
    query = (
        sa.select(_payments)
        .where(_payments.c.channel_id == "0x" + channel_id.hex(), _payments.c.id > after)
        .order_by(_payments.c.id)
        .limit(limit + 1)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return [_payment(r) for r in rows], (int(rows[-1].id) if more else None)


def unclaimed_by_token(engine: Engine, payees: Iterable[str]) -> list[tuple[str, int]]:
    """Sum of ``accepted - claimed`` per token over the payees' channels (for /metrics).

    Summed in Python: the amounts are uint256 stored as zero-padded text on SQLite, where SQL
    ``SUM`` would go through floats.
    """
    query = sa.select(_channels.c.token, _channels.c.accepted, _channels.c.claimed).where(
        _channels.c.payee.in_(list(payees)), _channels.c.status != int(ChannelStatus.CLOSED)
    )
    totals: dict[str, int] = {}
    with engine.connect() as conn:
        for token, accepted, claimed in conn.execute(query):
            totals[token] = totals.get(token, 0) + max(0, accepted - claimed)
    return sorted(totals.items())
