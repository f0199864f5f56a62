"""payments: one (channel_id, cumulative_amount) index instead of channel_id alone

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_channel_id")
        batch_op.create_index(
            "ix_payments_channel_cumulative", ["channel_id", "cumulative_amount"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_channel_cumulative")
        batch_op.create_index("ix_payments_channel_id", ["channel_id"], unique=False)
