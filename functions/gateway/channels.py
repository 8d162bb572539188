"""Where a person is reachable: their open WebSockets, else their linked Telegram chat.

Critical events (fills, alerts) from the event ROUTER come here; a person whose sockets
are at another gateway replica gets them there (``gateway/replica_fanout.py``). An event
that reaches no channel is not acknowledged, so it stays in the agent's outbox and comes
again. A notification from Kafka that reaches none is held instead (``gateway/held.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib

import msgspec
import structlog

from dexorder.contracts.chat import Attachment, CandlesFrame, EventFrame, FrameSink
from dexorder.contracts.rules import (
    BadRule,
    PercentMove,
    PriceCross,
    RuleFired,
    VolumeSpike,
    decode_fired,
)
from dexorder.schemas import UserEvent
from gateway.accounts.store import Accounts
from gateway.charts import candles_png
from gateway.replica_fanout import LoneReplica, Reach, Replicas
from gateway.telegram import BotApi, TelegramError

log = structlog.get_logger(part="gateway")

Outbox = FrameSink


def fired_text(fired: RuleFired) -> str:
    """A line a person can read about a market rule of theirs that fired."""
    rule, c = fired.rule, fired.rule.condition
    at = f"{fired.price:g}"
    if isinstance(c, PriceCross):
        return f"Alert: {rule.ticker} went {c.direction} {c.level:g} (at {at})"
    if isinstance(c, PercentMove):
        return (
            f"Alert: {rule.ticker} moved {c.percent:g}% {c.direction} within "
            f"{c.window_ms // 1000}s (at {at})"
        )
    if isinstance(c, VolumeSpike):
        return (
            f"Alert: {rule.ticker} {c.timeframe} volume {fired.volume or 0:g} is over "
            f"{c.multiple:g}x its average {fired.average or 0:g}"
        )
    fill = fired.fill_price if fired.fill_price is not None else fired.price
    kind = c.order_type.replace("_", "-")
    return (
        f"Order triggered: {kind} {c.side} {c.quantity:g} {rule.ticker} at {c.level:g} "
        f"(fills at {fill:g}; your paper account shows it when you next look)"
    )


def event_text(event: UserEvent) -> str:
    """A line a person can read about ``event``."""
    p = event.payload
    if event.kind in ("alert", "order_triggered") and "rule" in p:
        with contextlib.suppress(BadRule):  # a rule that fired: the platform watched it
            return fired_text(decode_fired(msgspec.json.encode(p)))
    if event.kind == "fill":
        return (
            f"Filled: {p.get('side')} {p.get('quantity')} {p.get('ticker')} at {p.get('price')}"
            f" ({p.get('mode', 'paper')})"
        )
    if event.kind == "alert":
        return (
            f"Alert: {p.get('ticker')} went {p.get('condition')} {p.get('price')}"
            f" (at {p.get('triggered_price')})"
        )
    if event.kind == "trade_confirmation":
        return (
            f"Live order {p.get('summary')}: your code is {p.get('code')}; "
            f"reply “confirm {p.get('code')}” to place it."
        )
    summary = ", ".join(f"{k} {v}" for k, v in p.items() if k != "code")
    return f"{event.kind}: {summary}"


def event_message(event: UserEvent) -> EventFrame:
    return EventFrame(
        kind=event.kind, event_id=event.event_id, text=event_text(event), payload=event.payload
    )


class ChannelHub:
    """The person's live channels in this gateway process."""

    def __init__(
        self, accounts: Accounts, bot: BotApi | None, replicas: Replicas | None = None
    ) -> None:
        self.accounts = accounts
        self.bot = bot
        #: the other gateway replicas, where the person's socket may be instead
        self.replicas: Replicas = replicas or LoneReplica()
        self._sockets: dict[str, set[Outbox]] = {}

    async def attach(self, user: str, outbox: Outbox) -> None:
        first = not self._sockets.get(user)
        self._sockets.setdefault(user, set()).add(outbox)
        if first:  # recorded before the socket is told it is ready: events find it
            await self.replicas.present(user)

    async def detach(self, user: str, outbox: Outbox) -> None:
        sockets = self._sockets.get(user)
        if sockets is not None:
            sockets.discard(outbox)
            if not sockets:
                del self._sockets[user]
                await self.replicas.absent(user)

    def online(self, user: str) -> bool:
        return bool(self._sockets.get(user))

    def people(self) -> list[str]:
        """Who has a WebSocket open here now."""
        return list(self._sockets)

    async def deliver(self, event: UserEvent) -> bool:
        """Tell the person about ``event``; True once some channel has it: their sockets
        here, else their sockets at another replica, else their Telegram chat."""
        if await self.to_sockets(event):
            return True
        reach = await self.replicas.ask(event)
        if reach is Reach.DELIVERED:
            return True
        if reach is Reach.UNSURE:  # another replica may have it: not Telegram too
            return False
        return await self.to_telegram(event)

    async def to_sockets(self, event: UserEvent) -> bool:
        """Write ``event`` to the person's sockets in this process; True once one has it."""
        delivered = False
        for outbox in list(self._sockets.get(event.user, ())):
            try:
                await outbox(event_message(event))
                delivered = True
            except Exception as exc:  # a socket closing as we write
                log.info("websocket gone while delivering", user=event.user, error=str(exc))
        return delivered

    async def to_telegram(self, event: UserEvent) -> bool:
        chat_id = await asyncio.to_thread(self.accounts.telegram_chat, event.user)
        if chat_id is None or self.bot is None:
            return False
        try:
            await self.bot.send_text(chat_id, event_text(event))
        except (TelegramError, OSError, TimeoutError) as exc:
            log.warning("telegram delivery failed", user=event.user, error=str(exc))
            return False
        return True

    async def send_attachments(self, chat_id: int, attachments: list[Attachment]) -> None:
        """Charts of a turn as Telegram photos."""
        assert self.bot is not None
        for item in attachments:
            if isinstance(item, CandlesFrame):
                if item.candles:
                    title = f"{item.ticker} {item.timeframe}"
                    png = await asyncio.to_thread(candles_png, item.candles, title)
                    await self.bot.send_photo(chat_id, png, title)
            else:
                await self.bot.send_photo(chat_id, base64.b64decode(item.data), item.caption)
