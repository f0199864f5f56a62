"""protocol v2: voucher signer, expiring close consents, task requests, payer voucher signers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 08:00:00

``channels.close_consented`` (v1: a consent valid for the channel's whole life) becomes the
consent's amount and deadline; a v1 consent never expires, so it migrates with the largest
deadline the column holds and those channels stay frozen exactly as before. ``revision`` is
the counter payments compare-and-set on besides the accepted amount.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import channel.store

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_FOREVER = 2**63 - 1


def _drop_column(table: str, column: str) -> None:
    # Alembic's batch mode drops a SQLite column by copying the table and dropping the old
    # one, which the foreign keys of rows referencing it (payments -> channels) refuse, and
    # PRAGMA foreign_keys cannot be switched off inside the migration's transaction. SQLite
    # >= 3.35 drops a plain column in place.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(sa.text(f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))
        return
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_column(column)


def upgrade() -> None:
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "voucher_signer",
                sqlmodel.sql.sqltypes.AutoString(length=42),
                nullable=False,
                server_default=_ZERO_ADDRESS,
            )
        )
        batch_op.add_column(sa.Column("consent_amount", channel.store.U256(), nullable=True))
        batch_op.add_column(sa.Column("consent_deadline", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "consent_signature", sqlmodel.sql.sqltypes.AutoString(length=132), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        sa.text(
            "UPDATE channels SET consent_amount = accepted, consent_deadline = :forever "
            "WHERE close_consented"
        ).bindparams(forever=_FOREVER)
    )
    _drop_column("channels", "close_consented")

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("task_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("amount", channel.store.U256(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("paid_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.channel_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel_id", "task_hash", name="uq_task"),
    )
    op.create_table(
        "payer_voucher_signers",
        sa.Column("channel_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("keystore", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id"),
    )


def downgrade() -> None:
    op.drop_table("payer_voucher_signers")
    op.drop_table("tasks")
    # Plain ADD COLUMN (no batch table copy, which the payments' foreign keys would refuse).
    op.add_column(
        "channels",
        sa.Column("close_consented", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # v1 has no deadline: any consent ever given freezes the channel again, the safe side.
    op.execute(
        sa.text("UPDATE channels SET close_consented = :yes WHERE consent_deadline IS NOT NULL")
        .bindparams(sa.bindparam("yes", True, type_=sa.Boolean()))
    )
    for column in ("revision", "consent_signature", "consent_deadline", "consent_amount",
                   "voucher_signer"):
        _drop_column("channels", column)
