"""OAuth 2.1 for MCP clients that log in by browser (the MCP authorization spec).

The MCP SDK's routes speak the protocol: authorization-server metadata, dynamic client
registration, ``/authorize`` (PKCE S256), ``/token`` and ``/revoke``; the protected
resource metadata names the gateway's ``/mcp`` door. What is the gateway's own is the
page where the person proves who they are and allows the client: email and password
(the account they log in with), a CSRF cookie, and the login's throttling.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import secrets
from pathlib import Path
from string import Template
from typing import Any

import structlog
from mcp.server.auth.handlers.metadata import ProtectedResourceMetadataHandler
from mcp.server.auth.provider import AuthorizationParams, construct_redirect_uri
from mcp.server.auth.routes import (
    REGISTRATION_PATH,
    cors_middleware,
    create_auth_routes,
    validate_issuer_url,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.accounts.store import AccountError
from gateway.oauth_provider import CODE_TTL_S, LOGIN_PATH, SCOPE, GatewayOAuth
from gateway.service import Gateway
from gateway.throttle import account_key, address_key

log = structlog.get_logger(part="gateway")

PAGE = Template((Path(__file__).resolve().parent.parent / "page" / "oauth_login.html").read_text())
CSRF_COOKIE = "dexorder_oauth_csrf"
#: Client registrations from one address per hour (each is a row in the database).
REGISTRATIONS_PER_HOUR = 30
#: The login form is small; anything bigger is not one.
MAX_FORM = 16 * 1024
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # no script at all; not framed (clickjacking the "allow" button)
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    # the page's address holds the pending request's id: never sent on
    "Referrer-Policy": "no-referrer",
}


def _address(request: Request) -> str:
    return address_key(request.client.host if request.client else None)


class _Page:
    """The login + consent page, rendered for one pending request."""

    def __init__(self, gw: Gateway, provider: GatewayOAuth) -> None:
        self.gw = gw
        self.provider = provider
        self.secure = provider.base_url.startswith("https://")

    def render(
        self,
        status: int,
        request_id: str = "",
        client: str = "",
        redirect: str = "",
        error: str = "",
        email: str = "",
    ) -> Response:
        csrf = secrets.token_urlsafe(24)
        text = PAGE.substitute(
            client=html.escape(client or "An MCP client"),
            scope=html.escape(SCOPE),
            redirect_host=html.escape(redirect),
            error=html.escape(error),
            action=html.escape(LOGIN_PATH),
            request=html.escape(request_id),
            csrf=html.escape(csrf),
            email=html.escape(email),
        )
        response = Response(text, status, headers=_HEADERS, media_type="text/html")
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            max_age=900,
            path=LOGIN_PATH,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )
        return response

    @staticmethod
    def dead_end(status: int, message: str) -> Response:
        """An answer with no form: nothing the person can do here but start again."""
        body = (
            "<!doctype html><meta charset='utf-8'><title>DexOrder</title>"
            f"<p>{html.escape(message)}</p>"
        )
        return Response(body, status, headers=_HEADERS, media_type="text/html")

    async def _pending(self, request_id: str) -> tuple[str, AuthorizationParams, str] | Response:
        """(client id, request, client name) of a live pending authorization, or the answer."""
        found = await asyncio.to_thread(self.provider.store.pending, request_id[:100])
        if found is None:
            return self.dead_end(
                400,
                "This authorization request is unknown or has expired. "
                "Start again from your MCP client.",
            )
        client_id, raw = found
        client = await self.provider.get_client(client_id)
        try:
            params = AuthorizationParams.model_validate_json(raw)
        except ValidationError:
            client = None
        if client is None:
            return self.dead_end(400, "This authorization request is no longer valid.")
        return client_id, params, client.client_name or client_id

    async def show(self, request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        found = await self._pending(request_id)
        if isinstance(found, Response):
            return found
        _, params, name = found
        return self.render(200, request_id, name, _host(params))

    async def answer(self, request: Request) -> Response:
        size = request.headers.get("content-length")
        if size is None or not size.isdigit() or int(size) > MAX_FORM:
            return self.dead_end(413, "The form is too large.")
        try:
            form = await request.form(max_files=0, max_fields=10)
        except Exception:  # not a form (multipart errors, bad encoding): the person's 400
            return self.dead_end(400, "This is not the login form.")
        request_id = _field(form, "request", 100)
        found = await self._pending(request_id)
        if isinstance(found, Response):
            return found
        client_id, params, name = found
        email = _field(form, "email", 320)

        def again(status: int, error: str) -> Response:
            return self.render(status, request_id, name, _host(params), error, email)

        cookie = request.cookies.get(CSRF_COOKIE, "")
        csrf = _field(form, "csrf", 100)
        if not cookie or not hmac.compare_digest(cookie.encode(), csrf.encode()):
            return again(403, "This form was not sent from this page. Please try again.")

        if _field(form, "decision", 10) == "deny":
            if await asyncio.to_thread(self.provider.store.take_pending, request_id) is None:
                return self.dead_end(400, "This authorization request has expired.")
            return _back(params, error="access_denied", error_description="the person denied it")

        gw = self.gw
        policies = gw.throttle.policies
        keyed = ((_address(request), policies.address), (account_key(email), policies.account))
        verdict = await gw.throttle.attempt(*keyed)
        if not verdict.allowed:
            response = again(429, f"Too many attempts; try again in {verdict.retry_after_s} s.")
            response.headers["Retry-After"] = str(verdict.retry_after_s)
            return response
        password = _field(form, "password", 1024)
        try:
            account = await asyncio.to_thread(gw.accounts.authenticate, email, password)
        except AccountError:
            await gw.throttle.failed(*keyed)
            return again(401, "Wrong email or password.")
        await gw.throttle.succeeded(forget=(keyed[1][0],), uncount=(keyed[0][0],))
        taken = await asyncio.to_thread(self.provider.store.take_pending, request_id)
        if taken is None:  # answered meanwhile (another tab) or expired
            return self.dead_end(400, "This authorization request has expired.")
        code = await asyncio.to_thread(
            self.provider.store.issue_code,
            client_id,
            account.id,
            params.model_dump_json().encode(),
            CODE_TTL_S,
        )
        log.info("oauth client allowed", user=account.id, client=client_id)
        return _back(params, code=code)


def _field(form: FormData, name: str, max_len: int) -> str:
    value = form.get(name)
    return value[:max_len] if isinstance(value, str) else ""


def _host(params: AuthorizationParams) -> str:
    uri = params.redirect_uri
    return f"{uri.scheme}://{uri.host or ''}" if uri.host else str(uri.scheme)


def _back(params: AuthorizationParams, **answer: str) -> Response:
    """Send the browser back to the client (303: it GETs the redirect URI)."""
    url = construct_redirect_uri(str(params.redirect_uri), state=params.state, **answer)
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


class _Throttled:
    """Client registration, limited per address (each is a row kept)."""

    def __init__(self, app: ASGIApp, gw: Gateway) -> None:
        self.app, self.gw = app, gw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            key = _address(Request(scope))
            verdict = await self.gw.throttle.count(
                f"oauth-register:{key}", REGISTRATIONS_PER_HOUR, 3600
            )
            if not verdict.allowed:
                response = JSONResponse(
                    {
                        "error": "invalid_client_metadata",
                        "error_description": "too many registrations",
                    },
                    status_code=429,
                    headers={"Retry-After": str(verdict.retry_after_s)},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def routes_for(gw: Gateway) -> list[BaseRoute]:
    """The OAuth routes of ``gw`` (none when its public address cannot be an issuer:
    OAuth 2.1 wants https off this machine; set ``gateway.public_url``)."""
    base = gw.cfg.gateway.public_base
    try:
        issuer = AnyHttpUrl(base)
        validate_issuer_url(issuer)
    except (ValueError, ValidationError) as exc:
        log.warning("OAuth for MCP clients is off", public_url=base, reason=str(exc))
        return []

    async def revoked(account_id: str) -> None:
        ids = await asyncio.to_thread(gw.accounts.revoked_pat_ids, account_id)
        await gw.provisioner.revoke_tokens(account_id, ids)

    provider = GatewayOAuth(
        gw.accounts.oauth,
        gw.keys,
        base,
        gw.cfg.gateway.access_ttl_s,
        gw.cfg.gateway.refresh_ttl_days * 86_400,
        revoked,
    )
    sdk: list[Any] = create_auth_routes(
        provider,
        issuer,
        client_registration_options=ClientRegistrationOptions(
            enabled=True, valid_scopes=[SCOPE], default_scopes=[SCOPE]
        ),
        revocation_options=RevocationOptions(enabled=True),
    )
    routes: list[BaseRoute] = [
        Route(r.path, _Throttled(r.endpoint, gw), methods=list(r.methods or []))
        if r.path == REGISTRATION_PATH
        else r
        for r in sdk
    ]
    metadata = ProtectedResourceMetadataHandler(
        ProtectedResourceMetadata(
            resource=AnyHttpUrl(provider.resource),
            authorization_servers=[issuer],
            scopes_supported=[SCOPE],
            resource_name="DexOrder agent",
        )
    )
    # RFC 9728 §3.1 puts it after the resource's path; the door's 401 names the bare one
    for path in (
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ):
        routes.append(
            Route(
                path,
                cors_middleware(metadata.handle, ["GET", "OPTIONS"]),
                methods=["GET", "OPTIONS"],
            )
        )
    page = _Page(gw, provider)
    routes.append(Route(LOGIN_PATH, page.show, methods=["GET"]))
    routes.append(Route(LOGIN_PATH, page.answer, methods=["POST"]))
    return routes
