"""Login sessions: short-lived access JWTs and rotating refresh tokens.

An access token (HS256, audience ``dexorder-gateway``, 15 minutes by default)
names the account and its tier; logout revokes its id until it would have
expired. A refresh token is an opaque random string stored only as its hash;
each use returns a new pair and retires the old token, and using a retired
token again (a sign it was stolen) revokes every token of that login: its
refresh tokens and, through the login's id (``fam``) in every access token and
checked at each use, its access tokens too, before they would expire.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import jwt
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from gateway.accounts.models import RefreshToken, RevokedSession
from gateway.accounts.store import AccountError, Accounts, AccountView

AUDIENCE = "dexorder-gateway"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


@dataclass(frozen=True)
class SessionClaims:
    account_id: str
    tier: str
    jti: str
    expires_at: int
    #: the login this session belongs to (all rotations of one refresh token)
    family: str | None = None


class Sessions:
    """Issues and checks the sessions of ``accounts``."""

    def __init__(
        self,
        accounts: Accounts,
        secret: str,
        access_ttl_s: int = 900,
        refresh_ttl_s: int = 30 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.engine: Engine = accounts.engine
        self.secret = secret
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock())

    def issue(self, account: AccountView, family: str | None = None) -> TokenPair:
        now = self._now()
        family = family or uuid.uuid4().hex
        access = jwt.encode(
            {
                "sub": account.id,
                "tier": account.tier,
                "jti": uuid.uuid4().hex,
                "fam": family,
                "iat": now,
                "exp": now + self.access_ttl_s,
                "aud": AUDIENCE,
            },
            self.secret,
            algorithm="HS256",
        )
        refresh = secrets.token_urlsafe(32)
        with Session(self.engine) as s, s.begin():
            s.add(
                RefreshToken(
                    id=hashlib.sha256(refresh.encode()).hexdigest(),
                    account_id=account.id,
                    family=family,
                    expires_at=now + self.refresh_ttl_s,
                )
            )
        return TokenPair(access, refresh, self.access_ttl_s)

    def verify(self, token: str) -> SessionClaims:
        """The claims of a valid, unrevoked access token; :class:`AccountError` (401) if not."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                # expiry is checked below against this object's clock
                options={
                    "require": ["sub", "jti", "exp", "aud"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            raise AccountError("invalid session token", 401) from None
        if not isinstance(claims["exp"], int) or claims["exp"] <= self._now():
            raise AccountError("session expired; refresh or log in again", 401)
        family = claims.get("fam")
        with Session(self.engine) as s:
            if s.get(RevokedSession, claims["jti"]) is not None:
                raise AccountError("session ended (logged out)", 401)
            # a login whose refresh tokens were revoked (reuse of a retired one, logout
            # with the refresh token, every session ended) ends its access tokens too
            if isinstance(family, str) and s.scalar(
                select(RefreshToken.id)
                .where(RefreshToken.family == family, RefreshToken.revoked_at.is_not(None))
                .limit(1)
            ):
                raise AccountError("session ended (its login was revoked)", 401)
        return SessionClaims(
            claims["sub"],
            claims.get("tier", "free"),
            claims["jti"],
            claims["exp"],
            family if isinstance(family, str) else None,
        )

    def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for a live refresh token; reuse of a retired one ends the whole login."""
        digest = hashlib.sha256(refresh_token.encode()).hexdigest()
        now = self._now()
        reused = False
        with Session(self.engine) as s, s.begin():
            row = s.get(RefreshToken, digest)
            if row is None or row.revoked_at is not None or row.expires_at < now:
                raise AccountError("invalid or expired refresh token; log in again", 401)
            account_id, family = row.account_id, row.family
            if row.used_at is not None:
                reused = True  # revoke the family, and commit that before refusing
                s.execute(
                    update(RefreshToken).where(RefreshToken.family == family).values(revoked_at=now)
                )
            else:
                row.used_at = now
        if reused:
            raise AccountError("refresh token reused; every session of that login ended", 401)
        return self.issue(self.accounts.get(account_id), family)

    def logout(self, claims: SessionClaims, refresh_token: str | None = None) -> None:
        """End this session: its access token now, its refresh token family too if given."""
        with Session(self.engine) as s, s.begin():
            if s.get(RevokedSession, claims.jti) is None:
                s.add(RevokedSession(jti=claims.jti, expires_at=claims.expires_at))
            if refresh_token:
                row = s.get(RefreshToken, hashlib.sha256(refresh_token.encode()).hexdigest())
                if row is not None and row.account_id == claims.account_id:
                    s.execute(
                        update(RefreshToken)
                        .where(RefreshToken.family == row.family)
                        .values(revoked_at=self._now())
                    )

    def end_all(self, account_id: str) -> int:
        """Revoke every refresh token of the account (e.g. after a password change)."""
        with Session(self.engine) as s, s.begin():
            rows = list(
                s.scalars(
                    select(RefreshToken).where(
                        RefreshToken.account_id == account_id, RefreshToken.revoked_at.is_(None)
                    )
                )
            )
            for row in rows:
                row.revoked_at = self._now()
            return len(rows)
