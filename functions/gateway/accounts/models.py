"""The accounts schema (SQLAlchemy 2 declarative models)."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A person. ``id`` is also their agent's user id (folder name, token subject)."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16), default="free")
    created_at: Mapped[int] = mapped_column(BigInteger)


class RefreshToken(Base):
    """A login session's refresh token (stored hashed; rotated on every use)."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    family: Mapped[str] = mapped_column(String(32))  # all rotations of one login
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_refresh_family", "family"),)


class RevokedSession(Base):
    """Access-token ids revoked before they expire (logout)."""

    __tablename__ = "revoked_sessions"

    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class PersonalAccessToken(Base):
    """A token the person made for an external MCP client (the token itself is not kept)."""

    __tablename__ = "personal_access_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the token's jti
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TelegramLink(Base):
    """A Telegram user linked to an account."""

    __tablename__ = "telegram_links"

    telegram_user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), unique=True
    )
    linked_at: Mapped[int] = mapped_column(BigInteger)


class DeliveredEvent(Base):
    """A critical event the gateway has delivered to the person (dedup by event id)."""

    __tablename__ = "delivered_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    delivered_at: Mapped[int] = mapped_column(BigInteger)


class HeldNotification(Base):
    """A notification taken while none of its person's channels was reachable, delivered
    (and removed) when they next connect; keyed by event id, so one held per event."""

    __tablename__ = "held_notifications"

    #: the order in which they were taken (delivered in this order)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[str] = mapped_column(String(63))
    #: the notification's JSON (``dexorder.contracts.events.Notification``)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    held_at: Mapped[int] = mapped_column(BigInteger)
    #: when a gateway began delivering it (None: nobody is); a claim older than the
    #: claim timeout is free again (that gateway stopped midway)
    claimed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_held_account", "account_id", "seq"),)


class LinkCode(Base):
    """A one-time code the person gives the bot to link their Telegram account."""

    __tablename__ = "telegram_link_codes"

    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger)


# --- OAuth 2.1 for MCP clients (gateway.oauth) -------------------------------------------


class OAuthClient(Base):
    """An MCP client registered by dynamic client registration (RFC 7591)."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: the registration as the SDK validated it (``OAuthClientInformationFull`` JSON)
    info: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[int] = mapped_column(BigInteger)


class OAuthPending(Base):
    """An authorization request waiting for its person to log in and allow it."""

    __tablename__ = "oauth_pending"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE")
    )
    #: the validated request (``AuthorizationParams`` JSON)
    params: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class OAuthCode(Base):
    """An authorization code (stored hashed; used once, within minutes)."""

    __tablename__ = "oauth_codes"

    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    #: the request it answers (``AuthorizationParams`` JSON: redirect URI, PKCE challenge, scopes)
    params: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class OAuthGrant(Base):
    """A person's consent to one MCP client. Its id is the ``jti`` of every access token
    made under it (the id space of personal access tokens), so revoking it stops them all,
    at the gateway and at the agent (``state/revoked_tokens``)."""

    __tablename__ = "oauth_grants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(200))
    resource: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    #: when its newest refresh token expires (extended at each refresh)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_oauth_grant_account", "account_id"),)


class OAuthRefresh(Base):
    """A grant's refresh token (stored hashed; rotated on every use: one used twice
    revokes its grant, as a stolen copy would)."""

    __tablename__ = "oauth_refresh_tokens"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("oauth_grants.id", ondelete="CASCADE"))
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_oauth_refresh_grant", "grant_id"),)
