"""The gateway as an OAuth 2.1 authorization server for MCP clients (the MCP SDK's
``OAuthAuthorizationServerProvider``): the SDK speaks the protocol (metadata, dynamic
client registration, PKCE, the token endpoint), this class keeps its records in the
accounts database and mints the tokens.

An access token is one of the platform's signed tokens (:mod:`dexorder.tokens`, kind
``pat``: what a person's agent takes from an outside client) whose ``jti`` is the id of
the person's grant, so ``Gateway.authenticate`` takes it as it takes a personal access
token, and revoking the grant (``DELETE /api/tokens/{id}``) stops every access token of
it at the gateway and at the agent. Refresh tokens are opaque, kept hashed, rotated on
every use. The person proves who they are on the gateway's login page
(:mod:`gateway.api.oauth`), which turns a pending authorization into a code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import ValidationError

from dexorder.tokens import InvalidToken, TokenKeys, mint_token, verify_token
from gateway.accounts.oauth_store import GrantView, OAuthStore, Replayed

#: The one scope: the person's agent (its tools, as an outside MCP client sees them).
SCOPE = "agent"
#: A pending authorization waits this long for its person to log in.
PENDING_TTL_S = 600
#: An authorization code is good this long (RFC 6749 §4.1.2: at most ten minutes).
CODE_TTL_S = 120
#: The login page's path (the SDK's /authorize redirects there).
LOGIN_PATH = "/oauth/login"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


class GrantCode(AuthorizationCode):
    """A code as the SDK's token endpoint checks it (``subject``: the person)."""


class GrantRefresh(RefreshToken):
    grant_id: str


class GrantAccess(AccessToken):
    grant_id: str


def check_redirect_uri(uri: str) -> None:
    """Refuse redirect URIs OAuth 2.1 forbids: plain http off this machine, and schemes
    a browser runs instead of following (``javascript:``, ``data:``...)."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme in ("javascript", "data", "vbscript", "file", "about", "blob"):
        raise RegistrationError("invalid_redirect_uri", f"redirect URI scheme {scheme!r} refused")
    if parsed.fragment:
        raise RegistrationError("invalid_redirect_uri", "a redirect URI has no fragment")
    if scheme == "http" and (parsed.hostname or "") not in _LOOPBACK:
        raise RegistrationError(
            "invalid_redirect_uri",
            "a redirect URI over plain http must be on this machine (localhost); use https",
        )


class GatewayOAuth:
    """The provider the SDK's auth routes call (async; the store's calls run in threads)."""

    def __init__(
        self,
        store: OAuthStore,
        keys: TokenKeys,
        base_url: str,
        access_ttl_s: int,
        refresh_ttl_s: int,
        revoked: Callable[[str], Awaitable[None]],
    ) -> None:
        self.store = store
        self.keys = keys
        self.base_url = base_url.rstrip("/")
        #: the protected resource (RFC 8707 / RFC 9728): the gateway's MCP door
        self.resource = f"{self.base_url}/mcp"
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        #: pushes a person's revoked token ids to their agent
        self.revoked = revoked

    # --- clients ----------------------------------------------------------------------

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        info = await asyncio.to_thread(self.store.client, client_id)
        if info is None:
            return None
        return OAuthClientInformationFull.model_validate_json(info)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        for uri in client_info.redirect_uris or []:
            check_redirect_uri(str(uri))
        if not client_info.redirect_uris:
            raise RegistrationError("invalid_redirect_uri", "a client needs a redirect URI")
        if len(client_info.redirect_uris) > 10 or any(
            len(str(u)) > 2000 for u in client_info.redirect_uris
        ):
            raise RegistrationError("invalid_redirect_uri", "at most 10 URIs of 2000 characters")
        if client_info.client_name and len(client_info.client_name) > 100:
            raise RegistrationError(
                "invalid_client_metadata", "client_name: at most 100 characters"
            )
        info = client_info.model_dump_json(exclude_none=True).encode()
        if len(info) > 16_384:
            raise RegistrationError("invalid_client_metadata", "the registration is too large")
        await asyncio.to_thread(self.store.save_client, str(client_info.client_id), info)

    # --- authorization ----------------------------------------------------------------

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        """Hold the (SDK-validated) request and send the browser to the login page."""
        if params.resource is not None and params.resource.rstrip("/") != self.resource:
            raise AuthorizeError("invalid_target", f"this server's resource is {self.resource}")
        params = params.model_copy(update={"scopes": params.scopes or [SCOPE]})
        request_id = await asyncio.to_thread(
            self.store.hold,
            str(client.client_id),
            params.model_dump_json().encode(),
            PENDING_TTL_S,
        )
        return f"{self.base_url}{LOGIN_PATH}?request={request_id}"

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> GrantCode | None:
        record = await asyncio.to_thread(self.store.code, authorization_code[:200])
        if record is None or record.client_id != client.client_id:
            return None
        try:
            params = AuthorizationParams.model_validate_json(record.params)
        except ValidationError:
            return None
        return GrantCode(
            code=authorization_code,
            scopes=params.scopes or [SCOPE],
            expires_at=record.expires_at,
            client_id=record.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject=record.account_id,
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: GrantCode
    ) -> OAuthToken:
        opened = await asyncio.to_thread(
            self.store.open_grant,
            authorization_code.code,
            client.client_name or str(client.client_id),
            " ".join(authorization_code.scopes),
            authorization_code.resource,
            self.refresh_ttl_s,
        )
        if opened is None:
            raise TokenError("invalid_grant", "authorization code already used")
        grant, refresh = opened
        return self._tokens(grant, refresh)

    def _tokens(self, grant: GrantView, refresh: str) -> OAuthToken:
        access = mint_token(
            self.keys, grant.account_id, "pat", self.access_ttl_s, token_id=grant.id
        )
        return OAuthToken(
            access_token=access,
            expires_in=self.access_ttl_s,
            scope=grant.scope,
            refresh_token=refresh,
        )

    # --- refresh ----------------------------------------------------------------------

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> GrantRefresh | None:
        found = await asyncio.to_thread(self.store.refresh_record, refresh_token[:200])
        if isinstance(found, Replayed):
            await self.revoked(found.grant.account_id)
            return None
        if found is None or found.grant.client_id != client.client_id:
            return None
        return GrantRefresh(
            token=refresh_token,
            client_id=found.grant.client_id,
            scopes=found.grant.scope.split(),
            expires_at=found.expires_at,
            resource=found.grant.resource,
            subject=found.grant.account_id,
            grant_id=found.grant.id,
        )

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: GrantRefresh,
        scopes: list[str],
    ) -> OAuthToken:
        rotated = await asyncio.to_thread(
            self.store.rotate, refresh_token.token, self.refresh_ttl_s
        )
        if rotated is None:
            raise TokenError("invalid_grant", "refresh token already used or revoked")
        grant, refresh = rotated
        return self._tokens(grant, refresh)

    async def exchange_identity_assertion(
        self, client: OAuthClientInformationFull, params: IdentityAssertionParams
    ) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "only the authorization code grant is taken")

    # --- access tokens and revocation ---------------------------------------------------

    async def load_access_token(self, token: str) -> GrantAccess | None:
        try:
            claims = verify_token(self.keys, token)
        except InvalidToken:
            return None
        grant = await asyncio.to_thread(self.store.grant, claims.token_id)
        if grant is None or grant.revoked_at is not None or grant.account_id != claims.user:
            return None
        return GrantAccess(
            token=token,
            client_id=grant.client_id,
            scopes=grant.scope.split(),
            expires_at=claims.expires_at,
            resource=grant.resource or self.resource,
            subject=grant.account_id,
            grant_id=grant.id,
        )

    async def revoke_token(self, token: GrantAccess | GrantRefresh) -> None:
        """The SDK's /revoke (RFC 7009): the whole grant goes, access and refresh."""
        account = token.subject or ""
        if await asyncio.to_thread(self.store.revoke, account, token.grant_id) is not None:
            await self.revoked(account)
