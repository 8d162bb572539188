"""Sign-up, login, sessions, personal access tokens, Telegram linking, delete my data."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

import msgspec
from msgspec import UnsetType
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dexorder.contracts.accounts import (
    Account,
    BadRequest,
    Credentials,
    LinkCode,
    LogoutRequest,
    MeAnswer,
    RefreshRequest,
    SessionAnswer,
    TelegramLogin,
    TokenCreated,
    TokenInfo,
    TokenList,
    TokenRequest,
)
from dexorder.contracts.accounts import request as typed
from gateway.accounts.models import PersonalAccessToken
from gateway.accounts.oauth_store import GrantView
from gateway.accounts.sessions import TokenPair
from gateway.accounts.store import AccountError, AccountView
from gateway.api.common import (
    answer,
    answers_refusals,
    body,
    bounded,
    caller,
    error,
    gateway_of,
    typed_body,
)
from gateway.limits import Verdict
from gateway.service import Refused
from gateway.telegram import check_login_widget
from gateway.throttle import account_key, address_key

#: A personal access token's life when none is asked for (days).
DEFAULT_PAT_DAYS = 90


def _session(account: AccountView, pair: TokenPair, status: int = 200) -> Response:
    return answer(SessionAnswer(account=Account(**asdict(account)), **asdict(pair)), status)


def _credentials(given: Credentials) -> tuple[str, str]:
    return bounded(given.email, "email", 320), bounded(given.password, "password", 1024)


def _too_many(verdict: Verdict) -> Refused:
    # the same words whatever was throttled (address, account, lockout or backoff): a 429
    # says nothing about whether the account exists
    return Refused(
        429,
        f"too many attempts; try again in {verdict.retry_after_s} s",
        verdict.retry_after_s,
    )


@answers_refusals
async def signup(request: Request) -> Response:
    email, password = _credentials(await typed_body(request, Credentials))
    gw = gateway_of(request)
    address = address_key(request.client.host if request.client else None)
    policies = gw.throttle.policies
    verdict = await gw.throttle.attempt((address, policies.address))
    if verdict.allowed:
        verdict = await gw.throttle.count(f"signup:{address}", policies.signups_per_hour, 3600)
        if not verdict.allowed:
            await gw.throttle.succeeded(uncount=(address,))
    if not verdict.allowed:
        raise _too_many(verdict)
    try:
        account = await asyncio.to_thread(gw.accounts.sign_up, email, password)
    except AccountError as exc:
        if exc.status == 409:  # probing which emails have accounts: a failed guess
            await gw.throttle.failed((address, policies.address))
        else:
            await gw.throttle.succeeded(uncount=(address,))
        raise
    await gw.throttle.succeeded(uncount=(address,))
    return _session(account, await asyncio.to_thread(gw.sessions.issue, account), 201)


@answers_refusals
async def login(request: Request) -> Response:
    """A session for the right email and password. Wrong password, no such account and a
    passwordless account are one answer (401); too many attempts from the address or on
    the email (existing or not) are one other (429 with Retry-After)."""
    email, password = _credentials(await typed_body(request, Credentials))
    gw = gateway_of(request)
    policies = gw.throttle.policies
    keyed = (
        (address_key(request.client.host if request.client else None), policies.address),
        (account_key(email), policies.account),
    )
    verdict = await gw.throttle.attempt(*keyed)
    if not verdict.allowed:
        raise _too_many(verdict)
    try:
        account = await asyncio.to_thread(gw.accounts.authenticate, email, password)
    except AccountError:
        await gw.throttle.failed(*keyed)
        raise
    await gw.throttle.succeeded(forget=(keyed[1][0],), uncount=(keyed[0][0],))
    return _session(account, await asyncio.to_thread(gw.sessions.issue, account))


@answers_refusals
async def refresh(request: Request) -> Response:
    given = await typed_body(request, RefreshRequest)
    gw = gateway_of(request)
    token = bounded(given.refresh_token, "refresh_token", 200)
    pair = await asyncio.to_thread(gw.sessions.refresh, token)
    claims = gw.sessions.verify(pair.access_token)
    return _session(gw.accounts.get(claims.account_id), pair)


@answers_refusals
async def logout(request: Request) -> Response:
    who = caller(request)
    given = await typed_body(request, LogoutRequest)
    if who.session is None:
        raise Refused(
            400, "logout ends a login session; revoke a token with DELETE /api/tokens/{id}"
        )
    await asyncio.to_thread(gateway_of(request).sessions.logout, who.session, given.refresh_token)
    return Response(status_code=204)


@answers_refusals
async def telegram_login(request: Request) -> Response:
    """Log in with the Telegram Login Widget's signed payload (of a linked account)."""
    gw = gateway_of(request)
    payload = await typed_body(request, TelegramLogin)
    bot_token = gw.cfg.gateway.telegram_bot_token
    if not bot_token:
        raise Refused(404, "Telegram is not configured on this platform")
    try:
        telegram_user = check_login_widget(payload, bot_token)
    except ValueError as exc:
        raise Refused(401, f"Telegram login refused: {exc}") from None
    account = await asyncio.to_thread(gw.accounts.account_for_telegram, telegram_user)
    if account is None:
        raise Refused(
            404,
            "this Telegram account is not linked: log in, get a link code and send "
            "/link CODE to the bot",
        )
    return _session(account, await asyncio.to_thread(gw.sessions.issue, account))


@answers_refusals
async def me(request: Request) -> Response:
    who = caller(request)
    gw = gateway_of(request)
    if request.method == "DELETE":
        gw.require_session(who, "delete the account")
        return answer(await gw.delete_account(who))
    used = await gw.limits.used(who.id)
    tier = gw.limits.tiers[who.account.tier]
    return answer(
        MeAnswer(
            account=Account(**asdict(who.account)),
            llm_tokens_this_month=used,
            llm_cost_this_month_usd=round(await gw.limits.spent_usd(who.id), 6),
            llm_budget_usd=tier.monthly_budget_usd,
            requests_per_minute=tier.requests_per_minute,
            agent=gw.provisioner.state(who.id),
            telegram_linked=gw.accounts.telegram_chat(who.id) is not None,
        )
    )


def _pat(p: PersonalAccessToken) -> TokenInfo:
    return TokenInfo(
        id=p.id,
        name=p.name,
        created_at=p.created_at,
        expires_at=p.expires_at,
        revoked=p.revoked_at is not None,
        kind="pat",
        scope=None,
        last_used_at=None,
    )


def _grant(g: GrantView) -> TokenInfo:
    return TokenInfo(
        id=g.id,
        name=g.client_name,
        created_at=g.created_at,
        expires_at=g.expires_at,
        revoked=g.revoked_at is not None,
        kind="oauth",
        scope=g.scope,
        last_used_at=g.last_used_at,
    )


def _bad_ttl(longest: int) -> Refused:
    return Refused(
        400,
        f"'ttl_days' must be a whole number of days from 1 to {longest} "
        "(every token expires; gateway.max_token_ttl_days)",
    )


@answers_refusals
async def tokens(request: Request) -> Response:
    who = caller(request)
    gw = gateway_of(request)
    if request.method == "GET":
        pats = [_pat(p) for p in await asyncio.to_thread(gw.accounts.list_pats, who.id)]
        grants = [_grant(g) for g in await asyncio.to_thread(gw.accounts.oauth.grants, who.id)]
        return answer(TokenList(tokens=pats + grants))
    gw.require_session(who, "create tokens")
    # every token expires, within the platform's maximum: a longer one (or null, "never")
    # is refused rather than cut short, so nobody holds a token that ends sooner than asked
    longest = gw.cfg.gateway.max_token_ttl_days
    try:
        asked = typed(await body(request), TokenRequest)
    except BadRequest as exc:  # a wrong-typed ttl_days (true, "30") says what is taken
        raise _bad_ttl(longest) if exc.field == "ttl_days" else Refused(400, str(exc)) from None
    days = asked.ttl_days
    if isinstance(days, UnsetType):
        days = min(DEFAULT_PAT_DAYS, longest)
    if days is None or not 1 <= days <= longest:
        raise _bad_ttl(longest)
    name = bounded(asked.name, "name", 100)
    token, pat = await asyncio.to_thread(gw.accounts.create_pat, who.id, name, gw.keys, days)
    made = TokenCreated(token=token, **msgspec.structs.asdict(_pat(pat)))
    return answer(made, 201)


@answers_refusals
async def revoke_token(request: Request) -> Response:
    who = caller(request)
    await gateway_of(request).revoke_pat(who, request.path_params["token_id"])
    return Response(status_code=204)


@answers_refusals
async def link_code(request: Request) -> Response:
    who = caller(request)
    gw = gateway_of(request)
    gw.require_session(who, "make Telegram link codes")
    if gw.bot is None:
        return error(404, "Telegram is not configured on this platform")
    code = await asyncio.to_thread(gw.accounts.telegram_link_code, who.id)
    return answer(LinkCode(code=code, send_to_bot=f"/link {code}", expires_in=600))


routes = [
    Route("/api/auth/signup", signup, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/telegram", telegram_login, methods=["POST"]),
    Route("/api/me", me, methods=["GET", "DELETE"]),
    Route("/api/tokens", tokens, methods=["GET", "POST"]),
    Route("/api/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/telegram/link-code", link_code, methods=["POST"]),
]
