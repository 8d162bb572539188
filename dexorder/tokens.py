"""Bearer tokens for a person's agent: who may call it, on whose behalf.

A token is an HS256 JWT signed with the platform's ``agent.token_secret``,
naming the person (``sub``) and its kind: ``service`` (the gateway, calling
on the person's behalf) or ``pat`` (a personal access token the person made
for an external MCP client such as Claude Desktop). The agent of person P
accepts only tokens whose ``sub`` is P; revoked personal tokens are refused
by id (``jti``).
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt

from dexorder.config import Settings

AUDIENCE = "dexorder-agent"
TokenKind = Literal["service", "pat"]
_USER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InvalidToken(ValueError):
    """Not a token of this platform: malformed, badly signed, expired or revoked."""


class InvalidUserId(ValueError):
    """A person id that is not lower-case letters, digits, ``_`` and ``-``."""


def check_user_id(user: str) -> str:
    """``user`` if it is a valid person id (it names folders, so it is strict)."""
    if not _USER.match(user):
        raise InvalidUserId(
            f"invalid user id {user!r}: use 1-63 lower-case letters, digits, '_' or '-'"
        )
    return user


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    user: str
    kind: TokenKind
    token_id: str
    expires_at: int | None


def mint_token(
    secret: str, user: str, kind: TokenKind = "service", ttl_s: int | None = 3600
) -> str:
    """A token for ``user``'s agent; ``ttl_s`` None makes one that never expires."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": check_user_id(user),
        "kind": kind,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "aud": AUDIENCE,
    }
    if ttl_s is not None:
        claims["exp"] = now + ttl_s
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, revoked: frozenset[str] = frozenset()) -> TokenClaims:
    """The claims of ``token``; raise :class:`InvalidToken` saying why not."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["sub", "jti", "iat", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    kind = claims.get("kind")
    if kind not in ("service", "pat"):
        raise InvalidToken("invalid token: unknown kind")
    if claims["jti"] in revoked:
        raise InvalidToken("token revoked")
    return TokenClaims(claims["sub"], kind, claims["jti"], claims.get("exp"))


def agent_token_secret(cfg: Settings) -> str:
    """The platform's token secret: ``agent.token_secret``, or made once under the home folder."""
    if cfg.agent.token_secret:
        return cfg.agent.token_secret
    return load_or_create_secret(Path(cfg.home) / "state" / "agent_token_secret")


def load_or_create_secret(path: Path) -> str:
    """The signing secret kept in ``path`` (mode 0600), made on first use."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secret)
    return secret
