"""OAuth 2.1 for MCP clients: registered clients, pending authorizations, codes, grants
and their refresh tokens.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _fk(column: str, target: str, length: int) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        column, sa.String(length), sa.ForeignKey(target, ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("info", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "oauth_pending",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        _fk("client_id", "oauth_clients.client_id", 64),
        sa.Column("params", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "oauth_codes",
        sa.Column("code_sha256", sa.String(64), primary_key=True),
        _fk("client_id", "oauth_clients.client_id", 64),
        _fk("account_id", "accounts.id", 63),
        sa.Column("params", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "oauth_grants",
        sa.Column("id", sa.String(32), primary_key=True),
        _fk("account_id", "accounts.id", 63),
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("client_name", sa.String(100), nullable=False),
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("resource", sa.String(2000), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("last_used_at", sa.BigInteger, nullable=True),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_oauth_grant_account", "oauth_grants", ["account_id"])
    op.create_table(
        "oauth_refresh_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        _fk("grant_id", "oauth_grants.id", 32),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_oauth_refresh_grant", "oauth_refresh_tokens", ["grant_id"])


def downgrade() -> None:
    for table in (
        "oauth_refresh_tokens",
        "oauth_grants",
        "oauth_codes",
        "oauth_pending",
        "oauth_clients",
    ):
        op.drop_table(table)
