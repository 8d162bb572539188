"""Bearer tokens for a person's agent: who may call it, on whose behalf.

A token is an EdDSA (Ed25519) JWT naming the person (``sub``) and its kind:
``service`` (the gateway, calling on the person's behalf) or ``pat`` (a
personal access token the person made for an external MCP client such as
Claude Desktop). Only the gateway holds the private key and mints tokens;
agents and the embedding service hold the public key and can only check
them, so no agent can make a token for another person. The agent of person P
accepts only tokens whose ``sub`` is P; revoked personal tokens are refused by
id (``jti``).

Keys: ``agent.token_private_key`` (the gateway; secrets.yaml) and
``agent.token_public_key`` (agents in the cluster); on one machine both come
from ``state/agent_token_ed25519.pem``, made on first use.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, ValidationError

from dexorder.config import ConfigError, Settings
from dexorder.secret_files import secret_file

AUDIENCE = "dexorder-agent"
#: The audience of the platform's tokens for the embedding service: the embedder takes
#: only these (kind ``service``), and nothing else takes them. A person's own tokens
#: (personal access tokens, their agent's service tokens) never reach the embedder.
EMBEDDER_AUDIENCE = "dexorder-embedder"
ALGORITHM = "EdDSA"
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
    expires_at: int


@dataclass(frozen=True)
class TokenKeys:
    """The public key (to check tokens) and, where tokens are made, the private key (PEM)."""

    public_pem: str
    private_pem: str | None = None


def new_private_pem() -> str:
    """A fresh Ed25519 private key, PEM (PKCS#8)."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def new_keys() -> TokenKeys:
    """A fresh Ed25519 key pair."""
    return keys_from_private(new_private_pem())


def keys_from_private(private_pem: str) -> TokenKeys:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return TokenKeys(public.decode(), private_pem)


def mint_token(
    keys: TokenKeys,
    user: str,
    kind: TokenKind = "service",
    ttl_s: int = 3600,
    audience: str = AUDIENCE,
    token_id: str | None = None,
) -> str:
    """A token for ``user``'s agent (or for ``audience``), valid ``ttl_s`` seconds: every
    token expires (and the gateway accepts none longer than ``gateway.max_token_ttl_days``).
    ``token_id`` (the ``jti``) is fresh unless given: every access token of one OAuth grant
    carries the grant's id, so revoking the grant revokes them all."""
    if keys.private_pem is None:
        raise InvalidToken("this process holds only the public key; it cannot make tokens")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": check_user_id(user),
        "kind": kind,
        "jti": token_id or uuid.uuid4().hex,
        "iat": now,
        "aud": audience,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, keys.private_pem, algorithm=ALGORITHM)


def verify_token(
    keys: TokenKeys,
    token: str,
    revoked: frozenset[str] = frozenset(),
    audience: str = AUDIENCE,
) -> TokenClaims:
    """The claims of ``token`` (made for ``audience``); raise :class:`InvalidToken` saying
    why not."""
    try:
        claims = jwt.decode(
            token,
            keys.public_pem,
            algorithms=[ALGORITHM],
            audience=audience,
            options={"require": ["sub", "jti", "iat", "aud", "exp"]},
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
    return TokenClaims(claims["sub"], kind, claims["jti"], claims["exp"])


def embedder_token(keys: TokenKeys, principal: str, ttl_s: int = 300) -> str:
    """A platform token for the embedding service, naming who calls (for its logs)."""
    return mint_token(keys, principal, "service", ttl_s, audience=EMBEDDER_AUDIENCE)


def token_keys(cfg: Settings) -> TokenKeys:
    """The keys this process has: configured, or (one machine) the home folder's key file."""
    a = cfg.agent
    try:
        if a.token_private_key:
            return keys_from_private(a.token_private_key)
        if a.token_public_key:
            serialization.load_pem_public_key(a.token_public_key.encode())
            return TokenKeys(a.token_public_key)
    except ValueError as exc:
        raise ConfigError(
            f"agent.token_private_key/token_public_key: not a PEM key ({exc})"
        ) from None
    return load_or_create_keys(Path(cfg.home) / "state" / "agent_token_ed25519.pem")


def load_or_create_keys(path: Path) -> TokenKeys:
    """The key pair whose private key is kept in ``path`` (mode 0600), made on first use."""
    return keys_from_private(secret_file(path, new_private_pem))


def public_keys(keys: TokenKeys) -> TokenKeys:
    """``keys`` without the private half: all a person's agent may hold."""
    return TokenKeys(keys.public_pem)


class AgentTokens(BaseModel):
    """The tokens the gateway hands a person's agent (which cannot make any): the service
    token it signs its critical events with, and its token for the embedding service."""

    model_config = ConfigDict(extra="forbid")

    service: str
    embedder: str


def write_agent_tokens(path: Path, tokens: AgentTokens) -> None:
    """Write ``tokens`` to ``path`` (mode 0600) so that a reader sees the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(tokens.model_dump_json())
    os.replace(tmp, path)


def read_agent_tokens(path: Path) -> AgentTokens:
    """The tokens in ``path``; :class:`InvalidToken` when there are none to read."""
    try:
        return AgentTokens.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise InvalidToken(f"no agent tokens in {path}: {exc}") from None
