"""Telegram: the Bot API client (replies, photos), webhook updates, Login Widget checks.

Replies go through the Bot API's ``sendMessage`` (split under Telegram's 4,096-character
limit) and ``sendPhoto`` for charts. The webhook trusts only requests carrying the
secret given to ``setWebhook`` (``X-Telegram-Bot-Api-Secret-Token``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import structlog

from dexorder.contracts.accounts import TelegramLogin, request, telegram_update

log = structlog.get_logger(part="gateway")

MAX_MESSAGE = 4096
#: A Login Widget payload older than this is refused (replays).
LOGIN_MAX_AGE_S = 86_400


class TelegramError(RuntimeError):
    """The Bot API refused a call; the message is its description."""


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line or word ends."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text.strip() or not pieces:
        pieces.append(text)
    return pieces


def check_login_widget(
    payload: TelegramLogin | Mapping[str, object], bot_token: str, now: float | None = None
) -> int:
    """The Telegram user id of a Login Widget payload, if Telegram signed it.

    Raises :class:`ValueError` saying why not (a field of the wrong type, missing hash,
    bad signature, too old).
    """
    login = payload if isinstance(payload, TelegramLogin) else request(payload, TelegramLogin)
    if not login.hash:
        raise ValueError("the payload carries no hash")
    fields = {
        k: v for k, v in msgspec.structs.asdict(login).items() if k != "hash" and v is not None
    }
    data_check = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    secret = hashlib.sha256(bot_token.encode()).digest()
    expected = hmac.new(secret, data_check.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, login.hash):
        raise ValueError("the payload is not signed by Telegram")
    if login.auth_date is None or login.id is None:
        raise ValueError("the payload lacks id or auth_date")
    if (now or time.time()) - login.auth_date > LOGIN_MAX_AGE_S:
        raise ValueError("the login is too old; log in again")
    return login.id


@dataclass(frozen=True)
class IncomingMessage:
    """A text message sent to the bot (the parts of an Update the gateway uses)."""

    update_id: int
    chat_id: int
    user_id: int
    text: str


def parse_update(update: object) -> IncomingMessage | None:
    """The text message in an Update (decoded JSON); None for the kinds the bot ignores
    (edits, stickers, channel posts…) and for what is no Update at all."""
    parsed = telegram_update(update)
    if parsed is None or parsed.message is None:
        return None
    message = parsed.message
    if message.text is None or message.sender is None:
        return None
    return IncomingMessage(parsed.update_id, message.chat.id, message.sender.id, message.text)


class SeenUpdates:
    """Update ids already handled (Telegram re-sends an update it got no 200 for)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._ids: OrderedDict[int, None] = OrderedDict()

    def first_time(self, update_id: int) -> bool:
        if update_id in self._ids:
            return False
        self._ids[update_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


class BotApi:
    """The Bot API calls the gateway makes, over one HTTP session."""

    def __init__(self, token: str, base_url: str = "https://api.telegram.org") -> None:
        self.base = f"{base_url.rstrip('/')}/bot{token}"
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def _call(self, method: str, **kw: Any) -> Any:
        async with self._session().post(f"{self.base}/{method}", **kw) as r:
            body = await r.json(content_type=None)
        if not isinstance(body, dict) or not body.get("ok"):
            description = body.get("description") if isinstance(body, dict) else body
            raise TelegramError(f"{method}: {description}")
        return body.get("result")

    async def send_text(self, chat_id: int, text: str) -> int:
        """Send ``text`` (split as needed); returns how many messages it took."""
        pieces = split_message(text)
        for piece in pieces:
            await self._call("sendMessage", json={"chat_id": chat_id, "text": piece})
        return len(pieces)

    async def send_photo(self, chat_id: int, png: bytes, caption: str = "") -> None:
        form = aiohttp.FormData()
        form.add_field("chat_id", str(chat_id))
        if caption:
            form.add_field("caption", caption[:1024])
        form.add_field("photo", png, filename="chart.png", content_type="image/png")
        await self._call("sendPhoto", data=form)

    async def typing(self, chat_id: int) -> None:
        await self._call("sendChatAction", json={"chat_id": chat_id, "action": "typing"})

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
