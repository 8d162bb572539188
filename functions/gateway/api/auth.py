"""Sign-up, login, sessions, personal access tokens, Telegram linking, delete my data."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.accounts.sessions import TokenPair
from gateway.accounts.store import AccountView
from gateway.api.common import answers_refusals, body, caller, error, gateway_of, text_field
from gateway.service import Refused
from gateway.telegram import check_login_widget


def _session(account: AccountView, pair: TokenPair, status: int = 200) -> JSONResponse:
    return JSONResponse({"account": asdict(account), **asdict(pair)}, status_code=status)


@answers_refusals
async def signup(request: Request) -> Response:
    data = await body(request)
    gw = gateway_of(request)
    account = await asyncio.to_thread(
        gw.accounts.sign_up, text_field(data, "email", 320), text_field(data, "password", 1024)
    )
    return _session(account, await asyncio.to_thread(gw.sessions.issue, account), 201)


@answers_refusals
async def login(request: Request) -> Response:
    data = await body(request)
    gw = gateway_of(request)
    account = await asyncio.to_thread(
        gw.accounts.authenticate,
        text_field(data, "email", 320),
        text_field(data, "password", 1024),
    )
    return _session(account, await asyncio.to_thread(gw.sessions.issue, account))


@answers_refusals
async def refresh(request: Request) -> Response:
    data = await body(request)
    gw = gateway_of(request)
    pair = await asyncio.to_thread(gw.sessions.refresh, text_field(data, "refresh_token", 200))
    claims = gw.sessions.verify(pair.access_token)
    return _session(gw.accounts.get(claims.account_id), pair)


@answers_refusals
async def logout(request: Request) -> Response:
    who = caller(request)
    data = await body(request)
    if who.session is None:
        raise Refused(
            400, "logout ends a login session; revoke a token with DELETE /api/tokens/{id}"
        )
    token = data.get("refresh_token")
    await asyncio.to_thread(
        gateway_of(request).sessions.logout,
        who.session,
        token if isinstance(token, str) else None,
    )
    return Response(status_code=204)


@answers_refusals
async def telegram_login(request: Request) -> Response:
    """Log in with the Telegram Login Widget's signed payload (of a linked account)."""
    gw = gateway_of(request)
    data = await body(request)
    bot_token = gw.cfg.gateway.telegram_bot_token
    if not bot_token:
        raise Refused(404, "Telegram is not configured on this platform")
    try:
        telegram_user = check_login_widget(data, bot_token)
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
        return JSONResponse(await gw.delete_account(who))
    used = await gw.limits.used(who.id)
    tier = gw.limits.tiers[who.account.tier]
    return JSONResponse(
        {
            "account": asdict(who.account),
            "llm_tokens_this_month": used,
            "llm_token_budget": tier.monthly_llm_tokens,
            "requests_per_minute": tier.requests_per_minute,
            "agent": gw.provisioner.state(who.id),
            "telegram_linked": gw.accounts.telegram_chat(who.id) is not None,
        }
    )


def _pat(p: Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "created_at": p.created_at,
        "expires_at": p.expires_at,
        "revoked": p.revoked_at is not None,
    }


@answers_refusals
async def tokens(request: Request) -> Response:
    who = caller(request)
    gw = gateway_of(request)
    if request.method == "GET":
        return JSONResponse({"tokens": [_pat(p) for p in gw.accounts.list_pats(who.id)]})
    data = await body(request)
    days = data.get("ttl_days", 90)
    if days is not None and (not isinstance(days, int) or not 1 <= days <= 3650):
        raise Refused(400, "'ttl_days' must be a whole number of days from 1 to 3650, or null")
    token, pat = await asyncio.to_thread(
        gw.accounts.create_pat, who.id, text_field(data, "name", 100), gw.keys, days
    )
    return JSONResponse({"token": token, **_pat(pat)}, status_code=201)


@answers_refusals
async def revoke_token(request: Request) -> Response:
    who = caller(request)
    await gateway_of(request).revoke_pat(who, request.path_params["token_id"])
    return Response(status_code=204)


@answers_refusals
async def link_code(request: Request) -> Response:
    who = caller(request)
    gw = gateway_of(request)
    if gw.bot is None:
        return error(404, "Telegram is not configured on this platform")
    code = await asyncio.to_thread(gw.accounts.telegram_link_code, who.id)
    return JSONResponse({"code": code, "send_to_bot": f"/link {code}", "expires_in": 600})


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
