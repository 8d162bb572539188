"""Accounts, personal access tokens and Telegram links, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect

from dexorder.tokens import new_keys, verify_token
from gateway.accounts.db import current_revision, migrate
from gateway.accounts.store import AccountError, Accounts

KEYS = new_keys()


def test_migrations_make_the_schema_and_are_idempotent(engine: Engine) -> None:
    assert current_revision(engine) == "0004"
    migrate(engine)  # again: nothing to do, nothing breaks
    tables = set(inspect(engine).get_table_names())
    assert {
        "accounts",
        "refresh_tokens",
        "personal_access_tokens",
        "telegram_links",
        "delivered_events",
        "held_notifications",
        "oauth_clients",
        "oauth_pending",
        "oauth_codes",
        "oauth_grants",
        "oauth_refresh_tokens",
    } <= tables


def test_sign_up_and_log_in(accounts: Accounts) -> None:
    alice = accounts.sign_up(" Alice@Example.com ", "correct horse battery", "pro")
    assert alice.email == "alice@example.com" and alice.tier == "pro"
    assert alice.id.startswith("u") and len(alice.id) == 17
    assert accounts.authenticate("alice@example.com", "correct horse battery").id == alice.id
    for email, password in [
        ("alice@example.com", "wrong password!"),
        ("nobody@example.com", "x" * 12),
    ]:
        with pytest.raises(AccountError, match="wrong email or password") as exc:
            accounts.authenticate(email, password)
        assert exc.value.status == 401


@pytest.mark.parametrize(
    ("email", "password", "tier", "message", "status"),
    [
        ("not-an-email", "long enough pw", "free", "invalid email", 400),
        ("a@b.co", "short", "free", "at least 10 characters", 400),
        ("a@b.co", "x" * 2000, "free", "too long", 400),
        ("a@b.co", "long enough pw", "gold", "unknown tier", 400),
    ],
)
def test_bad_sign_ups_say_why(
    accounts: Accounts, email: str, password: str, tier: str, message: str, status: int
) -> None:
    with pytest.raises(AccountError, match=message) as exc:
        accounts.sign_up(email, password, tier)
    assert exc.value.status == status


def test_an_email_has_one_account(accounts: Accounts) -> None:
    accounts.sign_up("bob@example.com", "long enough pw")
    with pytest.raises(AccountError, match="exists") as exc:
        accounts.sign_up("BOB@example.com", "another long pw")
    assert exc.value.status == 409


def test_personal_access_tokens_are_per_person(accounts: Accounts) -> None:
    alice = accounts.sign_up("alice@example.com", "long enough pw")
    bob = accounts.sign_up("bob@example.com", "long enough pw")
    token, pat = accounts.create_pat(alice.id, "Claude Desktop", KEYS)
    claims = verify_token(KEYS, token)
    assert (claims.user, claims.kind, claims.token_id) == (alice.id, "pat", pat.id)
    assert [p.name for p in accounts.list_pats(alice.id)] == ["Claude Desktop"]
    assert accounts.list_pats(bob.id) == []
    with pytest.raises(AccountError, match="no such token") as exc:
        accounts.revoke_pat(bob.id, pat.id)  # bob cannot revoke (or see) alice's token
    assert exc.value.status == 404
    assert accounts.revoked_pat_ids(alice.id) == set()
    accounts.revoke_pat(alice.id, pat.id)
    assert accounts.revoked_pat_ids(alice.id) == {pat.id}
    with pytest.raises(AccountError, match="needs a name"):
        accounts.create_pat(alice.id, " ", KEYS)


def test_telegram_linking_with_a_one_time_code(accounts: Accounts) -> None:
    alice = accounts.sign_up("alice@example.com", "long enough pw")
    code = accounts.telegram_link_code(alice.id)
    assert accounts.account_for_telegram(4242) is None
    assert accounts.redeem_link_code(code.lower(), 4242).id == alice.id
    assert accounts.account_for_telegram(4242).id == alice.id  # type: ignore[union-attr]
    with pytest.raises(AccountError, match="invalid or expired"):
        accounts.redeem_link_code(code, 5555)  # one time only


def test_an_expired_link_code_is_refused(engine: Engine) -> None:
    now = [1_000_000.0]
    accounts = Accounts(engine, clock=lambda: now[0])
    alice = accounts.sign_up("alice@example.com", "long enough pw")
    code = accounts.telegram_link_code(alice.id)
    now[0] += 601
    with pytest.raises(AccountError, match="invalid or expired"):
        accounts.redeem_link_code(code, 1)


def test_deleting_an_account_removes_what_is_keyed_by_it(accounts: Accounts) -> None:
    alice = accounts.sign_up("alice@example.com", "long enough pw")
    accounts.create_pat(alice.id, "cli", KEYS)
    accounts.redeem_link_code(accounts.telegram_link_code(alice.id), 77)
    accounts.delete(alice.id)
    with pytest.raises(AccountError, match="no such account"):
        accounts.get(alice.id)
    assert accounts.list_pats(alice.id) == [] and accounts.account_for_telegram(77) is None
    accounts.sign_up("alice@example.com", "long enough pw")  # the email is free again
