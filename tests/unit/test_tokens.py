"""Agent tokens: who they are for, who can make them, and every way one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

import jwt
import pytest

from dexorder.config import ConfigError, Settings
from dexorder.tokens import (
    InvalidToken,
    InvalidUserId,
    TokenKeys,
    check_user_id,
    keys_from_private,
    load_or_create_keys,
    mint_token,
    new_keys,
    new_private_pem,
    token_keys,
    verify_token,
)

#: the private key by itself too: tokens made by hand (not by mint_token) sign with it
PRIVATE = new_private_pem()
KEYS = keys_from_private(PRIVATE)
CLAIMS = {
    "sub": "alice",
    "kind": "pat",
    "jti": "x",
    "iat": 0,
    "aud": "dexorder-agent",
    "exp": int(time.time()) + 3600,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hmac_with_public_key() -> str:
    """The classic confusion attack, made by hand (PyJWT itself refuses to make it)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(CLAIMS).encode())}"
    mac = hmac.new(KEYS.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def test_a_token_names_its_person_and_kind() -> None:
    claims = verify_token(KEYS, mint_token(KEYS, "alice", "pat", ttl_s=60))
    assert (claims.user, claims.kind) == ("alice", "pat")
    assert claims.expires_at is not None and claims.expires_at > time.time()
    forever = jwt.encode(
        {k: v for k, v in CLAIMS.items() if k != "exp"}, PRIVATE, algorithm="EdDSA"
    )
    with pytest.raises(InvalidToken, match="exp"):
        verify_token(KEYS, forever)  # every token expires


def test_holding_only_the_public_key_checks_tokens_but_cannot_make_them() -> None:
    public_only = TokenKeys(KEYS.public_pem)
    assert verify_token(public_only, mint_token(KEYS, "alice")).user == "alice"
    with pytest.raises(InvalidToken, match="cannot make tokens"):
        mint_token(public_only, "bob")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint_token(new_keys(), "alice"), "invalid token"),  # another platform's key
        (mint_token(KEYS, "alice", ttl_s=-10), "token expired"),
        ("not-a-jwt", "invalid token"),
        # the classic confusion: HMAC "signed" with the public key as the secret
        (hmac_with_public_key(), "invalid token"),
        (jwt.encode(CLAIMS, "", algorithm="none"), "invalid token"),
        (
            jwt.encode({**CLAIMS, "kind": "root"}, PRIVATE, algorithm="EdDSA"),
            "unknown kind",
        ),
        (
            jwt.encode({k: v for k, v in CLAIMS.items() if k != "aud"}, PRIVATE, algorithm="EdDSA"),
            "invalid token",
        ),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_token(KEYS, token)


def test_a_revoked_token_is_refused() -> None:
    token = mint_token(KEYS, "alice", "pat")
    jti = verify_token(KEYS, token).token_id
    with pytest.raises(InvalidToken, match="revoked"):
        verify_token(KEYS, token, frozenset({jti}))


@pytest.mark.parametrize("user", ["", "Alice", "../bob", "a/b", "x" * 64, "a b", "-lead"])
def test_user_ids_that_could_name_other_folders_are_refused(user: str) -> None:
    with pytest.raises(InvalidUserId):
        check_user_id(user)


def test_the_key_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "key.pem"
    first = load_or_create_keys(path)
    assert first.private_pem and load_or_create_keys(path) == first
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_configured_keys(tmp_path: Path) -> None:
    gateway = token_keys(Settings(home=tmp_path, agent={"token_private_key": KEYS.private_pem}))
    agent = token_keys(Settings(home=tmp_path, agent={"token_public_key": KEYS.public_pem}))
    assert gateway == KEYS and agent == TokenKeys(KEYS.public_pem)
    with pytest.raises(ConfigError, match="not a PEM key"):
        token_keys(Settings(home=tmp_path, agent={"token_public_key": "nope"}))
