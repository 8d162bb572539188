"""Every HTTP request to a person's agent carries a bearer token for that person.

Missing, malformed, badly signed, expired or revoked → 401; a valid token of
another person → 403. Only ``/healthz`` is open (it says nothing about the
person). The verified claims are put in the ASGI scope for the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from dexorder.tokens import InvalidToken, TokenClaims, TokenKeys, verify_token

Scope = dict[str, Any]
ASGIApp = Callable[..., Any]
OPEN_PATHS = frozenset({"/healthz"})


class BearerAuth:
    """ASGI middleware admitting only ``user``'s tokens."""

    def __init__(
        self,
        app: ASGIApp,
        user: str,
        keys: TokenKeys,
        revoked: Callable[[], frozenset[str]] = frozenset,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.user = user
        self.keys = keys
        self.revoked = revoked
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await _deny(send, 401, "missing bearer token")
            return
        try:
            claims: TokenClaims = verify_token(self.keys, token.strip(), self.revoked())
        except InvalidToken as exc:
            await _deny(send, 401, str(exc))
            return
        if claims.user != self.user:
            await _deny(send, 403, "this token belongs to another person")
            return
        scope.setdefault("state", {})["token"] = claims
        if self.on_request is not None:
            self.on_request()
        await self.app(scope, receive, send)


async def _deny(send: Any, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="dexorder-agent"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
