"""Login sessions: expiry, refresh with rotation, reuse detection, logout."""

from __future__ import annotations

import jwt
import pytest

from gateway.accounts.sessions import Sessions
from gateway.accounts.store import AccountError, Accounts

SECRET = "s" * 64


@pytest.fixture
def clock() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture
def sessions(accounts: Accounts, clock: list[float]) -> Sessions:
    accounts.clock = lambda: clock[0]
    return Sessions(
        accounts, SECRET, access_ttl_s=900, refresh_ttl_s=86_400, clock=lambda: clock[0]
    )


def expect_401(message: str) -> pytest.RaisesExc[AccountError]:
    return pytest.raises(AccountError, match=message)


def test_an_access_token_names_the_account_and_expires(
    sessions: Sessions, accounts: Accounts, clock: list[float]
) -> None:
    alice = accounts.sign_up("alice@example.com", "long enough pw", "pro")
    pair = sessions.issue(alice)
    claims = sessions.verify(pair.access_token)
    assert (claims.account_id, claims.tier) == (alice.id, "pro")
    clock[0] += 901
    with pytest.raises(AccountError, match="session expired") as exc:
        sessions.verify(pair.access_token)
    assert exc.value.status == 401


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: jwt.encode(
            {**jwt.decode(t, options={"verify_signature": False}), "sub": "uevil"},
            "x" * 64,
            algorithm="HS256",
        ),
        lambda t: jwt.encode(
            {**jwt.decode(t, options={"verify_signature": False}), "aud": "dexorder-agent"},
            SECRET,
            algorithm="HS256",
        ),
        lambda t: "garbage",
    ],
)
def test_forged_tokens_are_refused(sessions: Sessions, accounts: Accounts, forge) -> None:  # type: ignore[no-untyped-def]
    pair = sessions.issue(accounts.sign_up("alice@example.com", "long enough pw"))
    with pytest.raises(AccountError, match="invalid session token"):
        sessions.verify(forge(pair.access_token))


def test_refresh_rotates_and_reuse_ends_the_login(sessions: Sessions, accounts: Accounts) -> None:
    alice = accounts.sign_up("alice@example.com", "long enough pw")
    first = sessions.issue(alice)
    second = sessions.refresh(first.refresh_token)
    assert sessions.verify(second.access_token).account_id == alice.id
    third = sessions.refresh(second.refresh_token)
    with pytest.raises(AccountError, match="reused"):
        sessions.refresh(first.refresh_token)  # a stolen, already used token comes back
    with pytest.raises(AccountError, match="invalid or expired refresh token"):
        sessions.refresh(third.refresh_token)  # the whole login is over
    other = sessions.issue(alice)  # another login is unaffected
    assert sessions.refresh(other.refresh_token).access_token


def test_refresh_tokens_expire(sessions: Sessions, accounts: Accounts, clock: list[float]) -> None:
    pair = sessions.issue(accounts.sign_up("alice@example.com", "long enough pw"))
    clock[0] += 86_401
    with pytest.raises(AccountError, match="invalid or expired refresh token"):
        sessions.refresh(pair.refresh_token)


def test_logout_revokes_the_access_token_and_its_login(
    sessions: Sessions, accounts: Accounts
) -> None:
    pair = sessions.issue(accounts.sign_up("alice@example.com", "long enough pw"))
    claims = sessions.verify(pair.access_token)
    sessions.logout(claims, pair.refresh_token)
    with pytest.raises(AccountError, match="logged out"):
        sessions.verify(pair.access_token)
    with pytest.raises(AccountError, match="invalid or expired refresh token"):
        sessions.refresh(pair.refresh_token)
