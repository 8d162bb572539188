"""Agent tokens: who they are for, and every way one is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest

from dexorder.tokens import (
    InvalidToken,
    InvalidUserId,
    check_user_id,
    load_or_create_secret,
    mint_token,
    verify_token,
)

SECRET = "s" * 64


def test_a_token_names_its_person_and_kind() -> None:
    claims = verify_token(SECRET, mint_token(SECRET, "alice", "pat", ttl_s=60))
    assert (claims.user, claims.kind) == ("alice", "pat")
    assert claims.expires_at is not None and claims.expires_at > time.time()
    forever = verify_token(SECRET, mint_token(SECRET, "alice", "pat", ttl_s=None))
    assert forever.expires_at is None


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (mint_token("another-secret-of-enough-length-0123456789", "alice"), "invalid token"),
        (mint_token(SECRET, "alice", ttl_s=-10), "token expired"),
        ("not-a-jwt", "invalid token"),
        (
            jwt.encode(
                {"sub": "alice", "kind": "root", "jti": "x", "iat": 0, "aud": "dexorder-agent"},
                SECRET,
            ),
            "unknown kind",
        ),
        (
            jwt.encode({"sub": "alice", "kind": "pat", "jti": "x", "iat": 0}, SECRET),
            "invalid token",
        ),
        (
            jwt.encode(
                {"sub": "alice", "kind": "pat", "jti": "x", "iat": 0, "aud": "dexorder-agent"},
                SECRET,
                algorithm="HS512",
            ),
            "invalid token",
        ),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_token(SECRET, token)


def test_a_revoked_token_is_refused() -> None:
    token = mint_token(SECRET, "alice", "pat")
    jti = verify_token(SECRET, token).token_id
    with pytest.raises(InvalidToken, match="revoked"):
        verify_token(SECRET, token, frozenset({jti}))


@pytest.mark.parametrize("user", ["", "Alice", "../bob", "a/b", "x" * 64, "a b", "-lead"])
def test_user_ids_that_could_name_other_folders_are_refused(user: str) -> None:
    with pytest.raises(InvalidUserId):
        check_user_id(user)


def test_the_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret"
    first = load_or_create_secret(path)
    assert len(first) > 40 and load_or_create_secret(path) == first
    assert os.stat(path).st_mode & 0o777 == 0o600
