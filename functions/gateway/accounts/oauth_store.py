"""OAuth 2.1 state in the accounts database: registered MCP clients, authorizations
waiting for their person, codes, grants and refresh tokens.

Everything is in the database (replicas share it; nothing in a process's memory), and
every secret handed out (a pending request's id, a code, a refresh token) is kept only
as its SHA-256. The protocol itself is the MCP SDK's (:mod:`gateway.oauth_provider`);
this module only keeps its records, with each one-time thing used at most once even
when two replicas race for it (a conditional DELETE/UPDATE and its row count).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from gateway.accounts.models import (
    OAuthClient,
    OAuthCode,
    OAuthGrant,
    OAuthPending,
    OAuthRefresh,
)

#: How long a grant's ``last_used_at`` may lag (a write at most this often per grant).
LAST_USED_STEP_S = 60


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class CodeRecord:
    """An authorization code's record: whose, for which client, answering which request."""

    client_id: str
    account_id: str
    params: bytes
    expires_at: int


@dataclass(frozen=True)
class GrantView:
    """A person's consent to one client, as listed and checked."""

    id: str
    account_id: str
    client_id: str
    client_name: str
    scope: str
    resource: str | None
    created_at: int
    expires_at: int
    last_used_at: int | None
    revoked_at: int | None


def _grant_view(g: OAuthGrant) -> GrantView:
    return GrantView(
        g.id,
        g.account_id,
        g.client_id,
        g.client_name,
        g.scope,
        g.resource,
        g.created_at,
        g.expires_at,
        g.last_used_at,
        g.revoked_at,
    )


@dataclass(frozen=True)
class RefreshRecord:
    """A live refresh token: its grant (not revoked) and when the token expires."""

    grant: GrantView
    expires_at: int


@dataclass(frozen=True)
class Replayed:
    """A refresh token presented again after use: its grant is now revoked."""

    grant: GrantView


class OAuthStore:
    """The OAuth records over ``engine`` (migrated)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock())

    # --- clients --------------------------------------------------------------------

    def save_client(self, client_id: str, info: bytes) -> None:
        with Session(self.engine) as s, s.begin():
            s.add(OAuthClient(client_id=client_id, info=info, created_at=self._now()))

    def client(self, client_id: str) -> bytes | None:
        with Session(self.engine) as s:
            row = s.get(OAuthClient, client_id[:64])
            return row.info if row else None

    # --- an authorization waiting for its person ---------------------------------------

    def hold(self, client_id: str, params: bytes, ttl_s: int) -> str:
        """Keep a validated authorization request until its person answers; the id
        returned (shown in the login page's address) is kept only hashed."""
        request_id = secrets.token_urlsafe(32)
        now = self._now()
        with Session(self.engine) as s, s.begin():
            s.execute(delete(OAuthPending).where(OAuthPending.expires_at < now))
            s.add(
                OAuthPending(
                    id_sha256=_sha(request_id),
                    client_id=client_id,
                    params=params,
                    expires_at=now + ttl_s,
                )
            )
        return request_id

    def pending(self, request_id: str) -> tuple[str, bytes] | None:
        """(client id, request) of a live pending authorization."""
        with Session(self.engine) as s:
            row = s.get(OAuthPending, _sha(request_id))
            if row is None or row.expires_at < self._now():
                return None
            return row.client_id, row.params

    def take_pending(self, request_id: str) -> tuple[str, bytes] | None:
        """The pending authorization, removed (answered once, by whichever replica wins)."""
        with Session(self.engine) as s, s.begin():
            row = s.get(OAuthPending, _sha(request_id))
            if row is None:
                return None
            found = (row.client_id, row.params, row.expires_at)
            gone = s.execute(delete(OAuthPending).where(OAuthPending.id_sha256 == _sha(request_id)))
            if gone.rowcount != 1 or found[2] < self._now():  # type: ignore[attr-defined]
                return None
            return found[0], found[1]

    # --- codes ----------------------------------------------------------------------

    def issue_code(self, client_id: str, account_id: str, params: bytes, ttl_s: int) -> str:
        code = secrets.token_urlsafe(32)
        now = self._now()
        with Session(self.engine) as s, s.begin():
            s.execute(delete(OAuthCode).where(OAuthCode.expires_at < now))
            s.add(
                OAuthCode(
                    code_sha256=_sha(code),
                    client_id=client_id,
                    account_id=account_id,
                    params=params,
                    expires_at=now + ttl_s,
                )
            )
        return code

    def code(self, code: str) -> CodeRecord | None:
        with Session(self.engine) as s:
            row = s.get(OAuthCode, _sha(code))
            if row is None:
                return None
            return CodeRecord(row.client_id, row.account_id, row.params, row.expires_at)

    def open_grant(
        self,
        code: str,
        client_name: str,
        scope: str,
        resource: str | None,
        refresh_ttl_s: int,
    ) -> tuple[GrantView, str] | None:
        """Use ``code`` (once: None when already used) for a new grant and its first
        refresh token."""
        now = self._now()
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            row = s.get(OAuthCode, _sha(code))
            if row is None:
                return None
            client_id, account_id = row.client_id, row.account_id
            gone = s.execute(delete(OAuthCode).where(OAuthCode.code_sha256 == _sha(code)))
            if gone.rowcount != 1:  # type: ignore[attr-defined]
                return None
            grant = OAuthGrant(
                id=uuid.uuid4().hex,  # the id space of personal access tokens' jti
                account_id=account_id,
                client_id=client_id,
                client_name=client_name[:100],
                scope=scope[:200],
                resource=resource,
                created_at=now,
                expires_at=now + refresh_ttl_s,
                last_used_at=now,
            )
            s.add(grant)
            s.flush()
            refresh = secrets.token_urlsafe(32)
            s.add(
                OAuthRefresh(
                    token_sha256=_sha(refresh),
                    grant_id=grant.id,
                    expires_at=now + refresh_ttl_s,
                )
            )
            return _grant_view(grant), refresh

    # --- refresh tokens ---------------------------------------------------------------

    def refresh_record(self, token: str) -> RefreshRecord | Replayed | None:
        """The live refresh token ``token``. One presented again after it was used is a
        copy in someone else's hands (or a client's replay): its grant is revoked."""
        now = self._now()
        with Session(self.engine) as s, s.begin():
            row = s.get(OAuthRefresh, _sha(token))
            if row is None:
                return None
            grant = s.get(OAuthGrant, row.grant_id)
            if grant is None or grant.revoked_at is not None:
                return None
            if row.used_at is not None:
                grant.revoked_at = now
                s.execute(delete(OAuthRefresh).where(OAuthRefresh.grant_id == grant.id))
                return Replayed(_grant_view(grant))
            return RefreshRecord(_grant_view(grant), row.expires_at)

    def rotate(self, token: str, refresh_ttl_s: int) -> tuple[GrantView, str] | None:
        """Spend ``token`` (once) for a new refresh token of its grant."""
        now = self._now()
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            spent = s.execute(
                update(OAuthRefresh)
                .where(OAuthRefresh.token_sha256 == _sha(token), OAuthRefresh.used_at.is_(None))
                .values(used_at=now)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row = s.get(OAuthRefresh, _sha(token))
            grant = s.get(OAuthGrant, row.grant_id) if row else None
            if grant is None or grant.revoked_at is not None:
                return None
            # spent ones are no longer needed past their grant's check above
            s.execute(
                delete(OAuthRefresh).where(
                    OAuthRefresh.grant_id == grant.id, OAuthRefresh.expires_at < now
                )
            )
            fresh = secrets.token_urlsafe(32)
            s.add(
                OAuthRefresh(
                    token_sha256=_sha(fresh), grant_id=grant.id, expires_at=now + refresh_ttl_s
                )
            )
            grant.expires_at = now + refresh_ttl_s
            grant.last_used_at = now
            return _grant_view(grant), fresh

    # --- grants -----------------------------------------------------------------------

    def grant(self, grant_id: str) -> GrantView | None:
        with Session(self.engine) as s:
            row = s.get(OAuthGrant, grant_id[:32])
            return _grant_view(row) if row else None

    def grants(self, account_id: str) -> list[GrantView]:
        with Session(self.engine) as s:
            rows = s.scalars(
                select(OAuthGrant)
                .where(OAuthGrant.account_id == account_id)
                .order_by(OAuthGrant.created_at)
            )
            return [_grant_view(g) for g in rows]

    def revoke(self, account_id: str, grant_id: str) -> GrantView | None:
        """Revoke one of ``account_id``'s own grants (another's is None, as a missing one)."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            grant = s.get(OAuthGrant, grant_id[:32])
            if grant is None or grant.account_id != account_id:
                return None
            grant.revoked_at = grant.revoked_at or self._now()
            s.execute(delete(OAuthRefresh).where(OAuthRefresh.grant_id == grant.id))
            return _grant_view(grant)

    def revoked_ids(self, account_id: str) -> set[str]:
        with Session(self.engine) as s:
            return set(
                s.scalars(
                    select(OAuthGrant.id).where(
                        OAuthGrant.account_id == account_id, OAuthGrant.revoked_at.is_not(None)
                    )
                )
            )

    def note_use(self, account_id: str, grant_id: str) -> None:
        """Record that a token of the grant was used now (at most once a minute: a read
        for every request, a write only when the record is stale)."""
        now = self._now()
        with Session(self.engine) as s:
            last = s.scalar(
                select(OAuthGrant.last_used_at).where(
                    OAuthGrant.id == grant_id[:32], OAuthGrant.account_id == account_id
                )
            )
        if last is None or now - last < LAST_USED_STEP_S:
            return
        with Session(self.engine) as s, s.begin():
            s.execute(
                update(OAuthGrant)
                .where(OAuthGrant.id == grant_id[:32], OAuthGrant.account_id == account_id)
                .values(last_used_at=now)
            )

    def forget_account(self, account_id: str) -> None:
        """Remove everything of ``account_id`` here (its grants, their refresh tokens, codes)."""
        with Session(self.engine) as s, s.begin():
            ids = select(OAuthGrant.id).where(OAuthGrant.account_id == account_id)
            s.execute(delete(OAuthRefresh).where(OAuthRefresh.grant_id.in_(ids)))
            s.execute(delete(OAuthGrant).where(OAuthGrant.account_id == account_id))
            s.execute(delete(OAuthCode).where(OAuthCode.account_id == account_id))
