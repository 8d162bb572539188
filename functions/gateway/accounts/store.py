"""Accounts: sign-up, login, tiers, personal access tokens, Telegram links, deletion."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dexorder.tokens import TokenKeys, check_user_id, mint_token, verify_token
from gateway.accounts.models import (
    Account,
    LinkCode,
    PersonalAccessToken,
    RefreshToken,
    TelegramLink,
)
from gateway.accounts.oauth_store import GrantView, OAuthStore

TIERS = ("free", "pro", "enterprise")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_hasher = PasswordHasher()
# verified against when the email is unknown, so both paths take the same time
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")
LINK_CODE_TTL_S = 600


class AccountError(ValueError):
    """A request about accounts that cannot be met; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AccountView:
    """What the rest of the gateway sees of an account."""

    id: str
    email: str
    tier: str
    created_at: int


def _view(a: Account) -> AccountView:
    return AccountView(a.id, a.email, a.tier, a.created_at)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Accounts:
    """The accounts store over ``engine`` (migrated)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        #: MCP clients' OAuth grants: their ids share the personal access tokens' id space
        self.oauth = OAuthStore(engine, clock)

    def _now(self) -> int:
        return int(self.clock())

    # --- sign-up and login --------------------------------------------------------

    def sign_up(self, email: str, password: str, tier: str = "free") -> AccountView:
        email = email.strip().lower()
        if not _EMAIL.match(email) or len(email) > 320:
            raise AccountError("invalid email address")
        if len(password) < 10:
            raise AccountError("the password must have at least 10 characters")
        if len(password) > 1024:
            raise AccountError("the password is too long (at most 1024 characters)")
        if tier not in TIERS:
            raise AccountError(f"unknown tier {tier!r}: expected one of {', '.join(TIERS)}")
        # the id names the person's folders and tokens: short, safe, not guessable from the email
        account_id = f"u{secrets.token_hex(8)}"
        account = Account(
            id=account_id,
            email=email,
            password_hash=_hasher.hash(password),
            tier=tier,
            created_at=self._now(),
        )
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                s.add(account)
        except IntegrityError:
            raise AccountError("an account with this email exists", status=409) from None
        return _view(account)

    def ensure_account(self, account_id: str, email: str, tier: str = "free") -> AccountView:
        """The account ``account_id``, made without a password if missing (the local person:
        reachable by tokens only, never by a login)."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            account = s.get(Account, check_user_id(account_id))
            if account is None:
                account = Account(
                    id=account_id,
                    email=email,
                    password_hash="!",  # not an argon2 hash: no password verifies against it
                    tier=tier,
                    created_at=self._now(),
                )
                s.add(account)
        return _view(account)

    def authenticate(self, email: str, password: str) -> AccountView:
        """The account if the password is right; the same error whatever was wrong."""
        with Session(self.engine) as s:
            account = s.scalar(select(Account).where(Account.email == email.strip().lower()))
            try:
                _hasher.verify(account.password_hash if account else _DUMMY_HASH, password)
            except (VerificationError, InvalidHashError):
                account = None
            if account is None:
                raise AccountError("wrong email or password", status=401)
            return _view(account)

    def get(self, account_id: str) -> AccountView:
        with Session(self.engine) as s:
            account = s.get(Account, account_id)
            if account is None:
                raise AccountError("no such account", status=404)
            return _view(account)

    def set_tier(self, account_id: str, tier: str) -> AccountView:
        if tier not in TIERS:
            raise AccountError(f"unknown tier {tier!r}: expected one of {', '.join(TIERS)}")
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            account = s.get(Account, account_id)
            if account is None:
                raise AccountError("no such account", status=404)
            account.tier = tier
        return _view(account)

    def delete(self, account_id: str) -> None:
        """Remove the account and everything keyed by it here (sessions, tokens, links)."""
        self.oauth.forget_account(account_id)
        with Session(self.engine) as s, s.begin():
            for model in (RefreshToken, PersonalAccessToken, TelegramLink, LinkCode):
                s.execute(delete(model).where(model.account_id == account_id))
            s.execute(delete(Account).where(Account.id == account_id))

    # --- personal access tokens ------------------------------------------------------

    def create_pat(
        self, account_id: str, name: str, keys: TokenKeys, ttl_days: int = 90
    ) -> tuple[str, PersonalAccessToken]:
        """A new token for ``account_id``'s agent; the token is shown once and not kept.
        Every token expires (the caller keeps ``ttl_days`` within the platform's maximum)."""
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise AccountError("a token needs a name of 1 to 100 characters")
        if not ttl_days or ttl_days < 1:
            raise AccountError("a token needs a life of at least one day (every token expires)")
        self.get(account_id)
        token = mint_token(keys, account_id, "pat", ttl_days * 86_400)
        claims = verify_token(keys, token)
        pat = PersonalAccessToken(
            id=claims.token_id,
            account_id=account_id,
            name=name,
            created_at=self._now(),
            expires_at=claims.expires_at,
        )
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(pat)
        return token, pat

    def list_pats(self, account_id: str) -> list[PersonalAccessToken]:
        with Session(self.engine, expire_on_commit=False) as s:
            return list(
                s.scalars(
                    select(PersonalAccessToken)
                    .where(PersonalAccessToken.account_id == account_id)
                    .order_by(PersonalAccessToken.created_at)
                )
            )

    def revoke_pat(self, account_id: str, pat_id: str) -> PersonalAccessToken | GrantView:
        """Revoke one of ``account_id``'s own tokens, a personal access token or an MCP
        client's OAuth grant (another's is "not found")."""
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            pat = s.get(PersonalAccessToken, pat_id)
            if pat is not None and pat.account_id == account_id:
                pat.revoked_at = pat.revoked_at or self._now()
                return pat
        grant = self.oauth.revoke(account_id, pat_id)
        if grant is None:
            raise AccountError("no such token", status=404)
        return grant

    def revoked_pat_ids(self, account_id: str) -> set[str]:
        """The ids of ``account_id``'s revoked tokens: personal access tokens and OAuth
        grants (the ``jti`` of every access token made under the grant)."""
        with Session(self.engine) as s:
            pats = set(
                s.scalars(
                    select(PersonalAccessToken.id).where(
                        PersonalAccessToken.account_id == account_id,
                        PersonalAccessToken.revoked_at.is_not(None),
                    )
                )
            )
        return pats | self.oauth.revoked_ids(account_id)

    # --- Telegram --------------------------------------------------------------------

    def telegram_link_code(self, account_id: str) -> str:
        """A one-time code to send the bot (``/link CODE``), valid for ten minutes."""
        self.get(account_id)
        code = secrets.token_hex(4).upper()
        with Session(self.engine) as s, s.begin():
            s.add(
                LinkCode(
                    code_sha256=_sha(code),
                    account_id=account_id,
                    expires_at=self._now() + LINK_CODE_TTL_S,
                )
            )
        return code

    def redeem_link_code(self, code: str, telegram_user_id: int) -> AccountView:
        with Session(self.engine) as s, s.begin():
            row = s.get(LinkCode, _sha(code.strip().upper()))
            if row is None or row.expires_at < self._now():
                raise AccountError("invalid or expired link code", status=400)
            s.delete(row)
            account_id = row.account_id
            s.execute(delete(TelegramLink).where(TelegramLink.telegram_user_id == telegram_user_id))
            s.execute(delete(TelegramLink).where(TelegramLink.account_id == account_id))
            s.add(
                TelegramLink(
                    telegram_user_id=telegram_user_id, account_id=account_id, linked_at=self._now()
                )
            )
        return self.get(account_id)

    def telegram_chat(self, account_id: str) -> int | None:
        """The private chat with the person's linked Telegram user (its id), if linked."""
        with Session(self.engine) as s:
            link = s.scalar(select(TelegramLink).where(TelegramLink.account_id == account_id))
            return link.telegram_user_id if link else None

    def account_for_telegram(self, telegram_user_id: int) -> AccountView | None:
        with Session(self.engine) as s:
            link = s.get(TelegramLink, telegram_user_id)
            return self.get(link.account_id) if link else None
