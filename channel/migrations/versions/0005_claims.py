"""claims: which transaction claimed each channel up to which amount (receipts' claim_tx)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:10:00

The watcher records every ``Claimed`` / ``ChannelClosed`` event of our channels, so the
operator's receipt list can name the transaction that paid each receipt (CSV export).
Channels claimed before this migration get no rows: their receipts show no claim
transaction until the next claim.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import channel.store

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("cumulative_amount", channel.store.U256(), nullable=False),
        sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel_id", "block_number", "log_index", name="uq_claim_log"),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_claims_block_number"), ["block_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_claims_channel_id"), ["channel_id"], unique=False)


def downgrade() -> None:
    op.drop_table("claims")
