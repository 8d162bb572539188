"""Notifications held for a person none of whose channels was reachable.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "held_notifications",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("account_id", sa.String(63), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("held_at", sa.BigInteger, nullable=False),
        sa.Column("claimed_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_held_account", "held_notifications", ["account_id", "seq"])


def downgrade() -> None:
    op.drop_table("held_notifications")
