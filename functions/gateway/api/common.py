"""What every handler shares: JSON errors, bearer tokens, bounded JSON bodies."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from dexorder.contracts.accounts import BadRequest, Body, encode
from dexorder.contracts.accounts import request as typed
from dexorder.contracts.chat import JsonObject
from dexorder.json_input import UnsafeInput, decode_json
from gateway.accounts.store import AccountError
from gateway.service import Caller, Gateway, Refused

MAX_BODY = 64 * 1024


def gateway_of(conn: HTTPConnection) -> Gateway:
    gw: Gateway = conn.app.state.gateway
    return gw


def error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="dexorder"'}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def refused(exc: Refused | AccountError) -> JSONResponse:
    if isinstance(exc, AccountError):
        return error(exc.status, str(exc))
    return error(exc.status, exc.message, exc.retry_after)


Handler = Callable[[Request], Awaitable[Response]]


def answers_refusals(handler: Handler) -> Handler:
    """``handler``, with a :class:`Refused` or :class:`AccountError` it raises answered
    as its 4xx/5xx JSON error."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (Refused, AccountError) as exc:
            return refused(exc)

    return wrapped


def bearer(conn: HTTPConnection) -> str:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "missing bearer token")
    return token.strip()


def caller(conn: HTTPConnection) -> Caller:
    return gateway_of(conn).authenticate(bearer(conn))


def json_object(raw: bytes | str, what: str = "the body", check_text: bool = True) -> JsonObject:
    """The JSON object of ``raw`` (an HTTP body or a WebSocket frame); :class:`Refused`
    (400) when it is not one, or holds what no platform part accepts
    (:mod:`dexorder.json_input`: deep nesting, NUL, lone surrogates, bidi controls)."""
    try:
        data = decode_json(raw or b"{}", check_text=check_text)
    except UnsafeInput as exc:
        raise Refused(400, f"{what} is refused: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(400, f"{what} must be a JSON object")
    return data


async def body(request: Request, check_text: bool = True) -> JsonObject:
    """The request's JSON object; :class:`Refused` (413/400) when too big or not an
    acceptable object (:func:`json_object`). Every caller decodes it into its contract's
    type at once."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY:
        raise Refused(413, f"request body too large (at most {MAX_BODY // 1024} KB)")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise Refused(413, f"request body too large (at most {MAX_BODY // 1024} KB)")
    return json_object(raw, check_text=check_text)


B = TypeVar("B", bound=msgspec.Struct)


async def typed_body(request: Request, kind: type[B]) -> B:
    """The request's body as a ``kind`` (:mod:`dexorder.contracts.accounts`):
    :class:`Refused` 413/400 as :func:`body`, and 400 naming a field missing or of the
    wrong type."""
    data = await body(request)
    try:
        return typed(data, kind)
    except BadRequest as exc:
        raise Refused(400, str(exc)) from None


def bounded(value: str, name: str, max_len: int) -> str:
    """``value`` of field ``name`` if at most ``max_len`` characters; a 413 otherwise
    (the type says "a string", not how long a one the store takes)."""
    if len(value) > max_len:
        raise Refused(413, f"'{name}' is too long (at most {max_len:,} characters)")
    return value


def answer(value: Body, status: int = 200) -> Response:
    """A typed response body as JSON."""
    return Response(encode(value), status_code=status, media_type="application/json")
