"""Critical events already delivered (the gateway delivers each event id once).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivered_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("delivered_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_delivered_account", "delivered_events", ["account_id"])


def downgrade() -> None:
    op.drop_table("delivered_events")
