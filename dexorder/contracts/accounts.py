"""The gateway's account API: the JSON bodies of sign-up, login, sessions, personal
access tokens, Telegram linking and "delete my data", and the parts of a Telegram Bot API
update and of a Login Widget payload the gateway reads.

A request body is decoded in two steps: :func:`dexorder.json_input.decode_json` applies
the doors' rules (nesting, NUL, lone surrogates, bidi controls), then :func:`request`
gives it its type, or :class:`BadRequest` naming the field that is missing or of the
wrong type (a 400). Fields a struct does not know are ignored, so a newer client's extra
fields are no error. The JSON on the wire is what the web page and ``dexorder`` read.
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from dexorder.contracts.chat import Account

__all__ = [
    "Account",
    "AccountDeleted",
    "AgentAddress",
    "AgentRequest",
    "BadRequest",
    "Body",
    "Credentials",
    "Delivered",
    "LinkCode",
    "LogoutRequest",
    "MeAnswer",
    "RefreshRequest",
    "SessionAnswer",
    "TelegramChat",
    "TelegramLogin",
    "TelegramMessage",
    "TelegramUpdate",
    "TelegramUser",
    "TokenCreated",
    "TokenInfo",
    "TokenList",
    "TokenRequest",
    "encode",
    "request",
    "telegram_update",
]

AgentState = Literal["stopped", "starting", "running", "idle", "crashed"]


class Body(msgspec.Struct, kw_only=True):
    """Base of every request and response body."""


# --- requests -------------------------------------------------------------------------


class Credentials(Body):
    """``POST /api/auth/signup`` and ``/api/auth/login``."""

    email: str
    password: str


class RefreshRequest(Body):
    """``POST /api/auth/refresh``: a new token pair for the refresh token."""

    refresh_token: str


class LogoutRequest(Body):
    """``POST /api/auth/logout``: the refresh token is ended too when given."""

    refresh_token: str | None = None


class TokenRequest(Body):
    """``POST /api/tokens``: a personal access token of ``ttl_days`` (the platform's
    default when absent; null, "never", is refused: every token expires)."""

    name: str
    ttl_days: int | UnsetType | None = UNSET


class TelegramLogin(Body):
    """``POST /api/auth/telegram``: the Telegram Login Widget's signed payload.

    Its signature covers every field it carries, so these are all the widget sends
    (https://core.telegram.org/widgets/login); a field unknown here is dropped by the
    decoder and the signature then fails: a 401, never a login on unchecked data."""

    # absent ones are a 401 after the signature check, as for a forged payload: a
    # wrong-typed one is a 400 (the payload is not the widget's at all)
    hash: str = ""
    id: int | None = None
    auth_date: int | None = None
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    photo_url: str | None = None


class AgentRequest(Body):
    """``POST /internal/agent``: the person whose agent's MCP address is wanted; ``token``:
    also a short-lived token for that person's agent (a function acting for the platform
    on their agent, e.g. applying a fired order rule, holds no key to make one)."""

    user: str
    token: bool = False


# --- responses ------------------------------------------------------------------------


class SessionAnswer(Body):
    """A login session (sign-up 201, login, refresh, Telegram login)."""

    account: Account
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str


class MeAnswer(Body):
    """``GET /api/me``: the account, its use this month and its agent."""

    account: Account
    llm_tokens_this_month: int
    #: what the month's model calls cost, and the tier's monthly budget (US$)
    llm_cost_this_month_usd: float
    llm_budget_usd: float | None  # null: no monthly cap (enterprise)
    requests_per_minute: int
    agent: AgentState
    telegram_linked: bool


class AccountDeleted(Body):
    """``DELETE /api/me``: whose data went, and how many knowledge vectors with it."""

    deleted: str
    knowledge_vectors: int


class TokenInfo(Body):
    """A token as listed: a personal access token (the token itself is shown only once),
    or an MCP client's OAuth grant (``name``: the client's; ``expires_at``: when its
    refresh token does). ``DELETE /api/tokens/{id}`` revokes either."""

    id: str
    name: str
    created_at: int
    expires_at: int | None
    revoked: bool
    kind: Literal["pat", "oauth"]
    #: what the token may do (OAuth grants: ``agent``; personal access tokens: None)
    scope: str | None
    #: when a token of the grant was last used (OAuth grants, to the minute)
    last_used_at: int | None


class TokenCreated(TokenInfo):
    """``POST /api/tokens`` (201): the new token, the only time it is shown."""

    token: str


class TokenList(Body):
    """``GET /api/tokens``."""

    tokens: list[TokenInfo]


class LinkCode(Body):
    """``POST /api/telegram/link-code``: what to send the bot to link a chat."""

    code: str
    send_to_bot: str
    expires_in: int


class AgentAddress(Body):
    """``POST /internal/agent``: the MCP address of the person's agent."""

    user: str
    mcp_url: str
    #: a service token for the person's agent (5 minutes), when asked for
    token: str | None = None


class Delivered(Body):
    """``POST /internal/notify``: the event id delivered (now or before)."""

    delivered: str


class Held(Body):
    """``POST /internal/notify``, 202: the event id taken and held (none of the person's
    channels is reachable now); it reaches them when they next open a chat."""

    held: str


# --- the Telegram Bot API update (https://core.telegram.org/bots/api#update) ----------


class TelegramChat(msgspec.Struct):
    id: int


class TelegramUser(msgspec.Struct):
    id: int


class TelegramMessage(msgspec.Struct):
    """The parts of a Bot API ``Message`` the gateway reads; absent ones are None
    (a photo has no ``text``, a channel post no ``from``)."""

    chat: TelegramChat
    sender: TelegramUser | None = msgspec.field(default=None, name="from")
    text: str | None = None


class TelegramUpdate(msgspec.Struct):
    """A Bot API ``Update``: only ``message`` is read (edits, callbacks… are ignored)."""

    update_id: int
    message: TelegramMessage | None = None


# --- decoding and encoding ------------------------------------------------------------


class BadRequest(ValueError):
    """A body that is not the endpoint's: the message names the field (a 400)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        #: the top-level field at fault (None: the body as a whole, or deeper)
        self.field = field


R = TypeVar("R", bound=msgspec.Struct)

_MISSING = re.compile(r"Object missing required field `(\w+)`(?: - at `\$(.*)`)?")
_AT = re.compile(r"^(.*) - at `\$\.(\w+)(.*)`$")
_KINDS = {
    msgspec.inspect.StrType: "a string",
    msgspec.inspect.IntType: "a whole number",
    msgspec.inspect.BoolType: "true or false",
    msgspec.inspect.NoneType: "null",
}


def _expected(kind: type[msgspec.Struct], name: str) -> tuple[str, bool] | None:
    """What field ``name`` of ``kind`` holds, in words ("a string or null"), and whether
    it is required; None when it is no simple kind."""
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if field.encode_name != name:
            continue
        kinds = field.type
        types = kinds.types if isinstance(kinds, msgspec.inspect.UnionType) else (kinds,)
        words = [_KINDS.get(type(t)) for t in types]
        if all(words):
            return " or ".join(w for w in words if w), field.required
    return None


def _say(kind: type[msgspec.Struct], exc: msgspec.ValidationError) -> BadRequest:
    text = str(exc)
    missing = _MISSING.fullmatch(text)
    if missing and not missing.group(2):  # a top-level field
        name = missing.group(1)
        what = _expected(kind, name)
        return BadRequest(f"'{name}' is required ({what[0] if what else 'see the API'})", name)
    at = _AT.match(text)
    if at and not at.group(3):  # a top-level field of the wrong type
        name = at.group(2)
        what = _expected(kind, name)
        if what is None:
            return BadRequest(f"'{name}': {at.group(1)}", name)
        # a required one in the words text fields have always had ("'email' is
        # required (a string)"): absent or not a string, the client's fix is the same
        return BadRequest(
            f"'{name}' is required ({what[0]})" if what[1] else f"'{name}' must be {what[0]}",
            name,
        )
    return BadRequest(f"the body is not accepted: {text}")


def request(value: object, kind: type[R]) -> R:
    """``value`` (JSON decoded under :mod:`dexorder.json_input`'s rules) as a ``kind``
    body; :class:`BadRequest` naming the field missing or of the wrong type."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise _say(kind, exc) from None


def telegram_update(value: object) -> TelegramUpdate | None:
    """The update in ``value``; None when it is not one the bot reads. Never an error:
    Telegram re-sends an update refused with a 400, holding up every later one."""
    try:
        return msgspec.convert(value, TelegramUpdate)
    except msgspec.ValidationError:
        return None


_encoder = msgspec.json.Encoder()


def encode(body: Body) -> bytes:
    """The JSON of a response body."""
    return _encoder.encode(body)
