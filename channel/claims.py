"""Which transaction claimed a receipt: the ``claims`` table (migration 0005).

The watcher hands every followed block range to ``record_claims``; rows of that range are
replaced, so a range re-processed after a reorg leaves only the events of the new blocks.
``claim_transactions`` answers, for receipts of one channel, the first transaction whose
``Claimed`` / ``ChannelClosed`` covered each cumulative amount (None while unclaimed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from channel.chain import ChannelClosed, ChannelOpened, Claimed
from channel.store import ClaimRow, _db_errors

__all__ = ["claim_transactions", "record_claims"]

_claims = ClaimRow.__table__  # type: ignore[attr-defined]


def _claim_rows(events: Iterable[object]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for ev in events:
        if isinstance(ev, Claimed):
            amount = ev.cumulative_amount
        elif isinstance(ev, ChannelClosed):
            amount = ev.payee_total
        else:
            continue
        cid = "0x" + ev.channel_id.hex()
        rows.append({
            "channel_id": cid,
            "cumulative_amount": amount,
            "tx_hash": "0x" + ev.meta.tx_hash.hex(),
            "block_number": ev.meta.block_number,
            "log_index": ev.meta.log_index,
        })
    return rows


def record_claims(
    engine: Engine, start: int, end: int, events: Sequence[object],
    *, payees: Iterable[str] | None = None,
) -> None:
    """Replace the claims recorded for blocks ``start..end`` with those in ``events``, keeping
    only our channels: those the store mirrors, and those opened in ``events`` for one of
    ``payees`` (None: every payee), so a channel opened and claimed in one range counts."""
    channels = ClaimRow.metadata.tables["channels"]
    wanted = None if payees is None else {p.lower() for p in payees}
    opened = {
        "0x" + ev.channel_id.hex() for ev in events
        if isinstance(ev, ChannelOpened) and (wanted is None or ev.payee.lower() in wanted)
    }
    with _db_errors("the claims"), engine.begin() as conn:
        conn.execute(sa.delete(_claims).where(_claims.c.block_number.between(start, end)))
        candidates = _claim_rows(events)
        if not candidates:
            return
        ids = {str(r["channel_id"]) for r in candidates}
        known = {
            row[0] for row in conn.execute(
                sa.select(channels.c.channel_id).where(channels.c.channel_id.in_(ids)))
        }
        rows = [r for r in candidates if r["channel_id"] in known | opened]
        if rows:
            conn.execute(sa.insert(_claims), rows)


def claim_transactions(
    engine: Engine, channel_id: bytes, amounts: Sequence[int]
) -> list[str | None]:
    """For each cumulative amount, the hash of the first claim that covered it, or None."""
    query = (
        sa.select(_claims.c.cumulative_amount, _claims.c.tx_hash)
        .where(_claims.c.channel_id == "0x" + channel_id.hex())
        .order_by(_claims.c.block_number, _claims.c.log_index)
    )
    with _db_errors("the claims"), engine.connect() as conn:
        claims = [(int(r[0]), str(r[1])) for r in conn.execute(query)]
    out: list[str | None] = []
    for amount in amounts:
        out.append(next((tx for covered, tx in claims if covered >= amount), None))
    return out
