"""Live trading through CCXT: off unless the person turned it on, within their limits,
and only after they confirm each order in their own channel.

The person (not their agent) turns it on and sets the limits and exchange keys
with ``dexorder live --user <id> --enable ...``; no MCP tool can. An order
request is checked against the per-order and per-day notional limits, then
parked: a six-digit code goes to the person's channel as a critical
``trade_confirmation`` event and *not* to the caller, so the calling agent
cannot confirm on its own. ``confirm_trade`` with the code the person echoes
back places the order, after checking the limits again. Codes expire after
five minutes and allow five attempts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from agent.events import EventPublisher
from dexorder.config import Settings
from dexorder.contracts.agent_tools import LiveOrder, LiveTrade, LiveTradeRequest
from dexorder.markets import InvalidTicker, Ticker

CONFIRM_TTL_MS = 5 * 60_000
MAX_ATTEMPTS = 5


class LiveTradingError(ValueError):
    """A live order refused; the message says why."""


class LiveSettings(BaseModel):
    enabled: bool = False
    per_order_notional: float = Field(100.0, gt=0)
    per_day_notional: float = Field(1_000.0, gt=0)


class PendingTrade(BaseModel):
    id: str
    code_sha256: str
    ticker: str
    side: str
    quantity: float
    order_type: str
    limit_price: float | None
    notional: float
    expires_at: int
    attempts: int = 0


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)


def configure(
    state_dir: Path,
    enabled: bool,
    per_order: float,
    per_day: float,
    api_key: str | None = None,
    secret: str | None = None,
) -> LiveSettings:
    """What ``dexorder live`` writes: the switch, the limits, the exchange keys."""
    settings = LiveSettings(enabled=enabled, per_order_notional=per_order, per_day_notional=per_day)
    _write_private(state_dir / "live.json", settings.model_dump_json(indent=2))
    if api_key and secret:
        _write_private(
            state_dir / "exchange_keys.json", json.dumps({"apiKey": api_key, "secret": secret})
        )
    return settings


def _today(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


class LiveTrading:
    """The person's live account on their exchange."""

    def __init__(
        self,
        cfg: Settings,
        state_dir: Path,
        price: Callable[[str], Awaitable[float]],
        events: Callable[[], EventPublisher | None],
    ) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.price = price
        self.events = events
        self.pending_path = state_dir / "live_pending.json"
        self.ledger_path = state_dir / "live_ledger.jsonl"

    def settings(self) -> LiveSettings:
        path = self.state_dir / "live.json"
        return (
            LiveSettings.model_validate_json(path.read_text()) if path.is_file() else LiveSettings()
        )

    def _pending(self) -> dict[str, PendingTrade]:
        if not self.pending_path.is_file():
            return {}
        raw = json.loads(self.pending_path.read_text())
        return {k: PendingTrade.model_validate(v) for k, v in raw.items()}

    def _save_pending(self, pending: dict[str, PendingTrade]) -> None:
        _write_private(
            self.pending_path, json.dumps({k: v.model_dump() for k, v in pending.items()})
        )

    def spent_today(self, now_ms: int) -> float:
        if not self.ledger_path.is_file():
            return 0.0
        day = _today(now_ms)
        return sum(
            float(e["notional"])
            for e in map(json.loads, self.ledger_path.read_text().splitlines())
            if _today(e["time"]) == day
        )

    def _require_enabled(self) -> LiveSettings:
        s = self.settings()
        if not s.enabled:
            raise LiveTradingError(
                "live trading is off for this account; the person can turn it on with "
                "`dexorder live --enable` (paper trading works meanwhile)"
            )
        return s

    def _check_limits(self, notional: float, now_ms: int) -> None:
        s = self._require_enabled()
        if notional > s.per_order_notional:
            raise LiveTradingError(
                f"the order is worth about {notional:,.2f}, over the per-order limit of "
                f"{s.per_order_notional:,.2f}"
            )
        spent = self.spent_today(now_ms)
        if spent + notional > s.per_day_notional:
            raise LiveTradingError(
                f"the order would bring today's live trading to {spent + notional:,.2f}, over "
                f"the daily limit of {s.per_day_notional:,.2f} ({spent:,.2f} used)"
            )

    async def request(
        self, ticker: str, side: str, quantity: float, order_type: str, limit_price: float | None
    ) -> LiveTradeRequest:
        """Check the order and ask the person to confirm it in their channel."""
        self._require_enabled()
        try:
            t = str(Ticker.parse(ticker))
        except InvalidTicker as exc:
            raise LiveTradingError(str(exc)) from None
        if order_type == "limit" and not limit_price:
            raise LiveTradingError("a limit order needs a limit_price")
        price = limit_price if order_type == "limit" and limit_price else await self.price(t)
        notional = quantity * price
        now = int(time.time() * 1000)
        self._check_limits(notional, now)
        events = self.events()
        if events is None:
            raise LiveTradingError("the agent cannot reach the person's channels to confirm")
        code = f"{secrets.randbelow(1_000_000):06d}"
        trade = PendingTrade(
            id=uuid.uuid4().hex[:12],
            code_sha256=hashlib.sha256(code.encode()).hexdigest(),
            ticker=t,
            side=side,
            quantity=quantity,
            order_type=order_type,
            limit_price=limit_price,
            notional=notional,
            expires_at=now + CONFIRM_TTL_MS,
        )
        pending = {k: v for k, v in self._pending().items() if v.expires_at > now}
        pending[trade.id] = trade
        self._save_pending(pending)
        summary = (
            f"{side} {quantity:g} {t} {order_type}"
            + (f" at {limit_price:g}" if limit_price else "")
            + f", about {notional:,.2f}"
        )
        events.critical(
            "trade_confirmation",
            {
                "confirmation_id": trade.id,
                "code": code,
                "summary": summary,
                "expires_at": trade.expires_at,
            },
        )
        return LiveTradeRequest(
            status="awaiting_confirmation",
            confirmation_id=trade.id,
            summary=summary,
            expires_at=trade.expires_at,
            next="the person received a code in their channel; call confirm_trade with it "
            "only once they send it back",
        )

    async def confirm(self, confirmation_id: str | None, code: str) -> LiveTrade:
        """Place a parked order if ``code`` is the one sent to the person; without an id,
        the one order waiting for a code."""
        now = int(time.time() * 1000)
        pending = self._pending()
        if confirmation_id is None:
            waiting = [k for k, t in pending.items() if t.expires_at > now]
            if not waiting:
                raise LiveTradingError("no live order waits for a code; request the trade again")
            if len(waiting) > 1:
                raise LiveTradingError(
                    f"{len(waiting)} live orders wait for a code: say which (confirmation_id)"
                )
            confirmation_id = waiting[0]
        trade = pending.get(confirmation_id)
        if trade is None or trade.expires_at <= now:
            pending.pop(confirmation_id, None)
            self._save_pending(pending)
            raise LiveTradingError("no such confirmation, or it expired; request the trade again")
        if not hmac.compare_digest(hashlib.sha256(code.encode()).hexdigest(), trade.code_sha256):
            trade.attempts += 1
            if trade.attempts >= MAX_ATTEMPTS:
                pending.pop(confirmation_id)
                self._save_pending(pending)
                raise LiveTradingError("wrong code too often; the trade is cancelled")
            self._save_pending(pending)
            raise LiveTradingError(f"wrong code ({MAX_ATTEMPTS - trade.attempts} attempts left)")
        pending.pop(confirmation_id)
        self._save_pending(pending)
        self._check_limits(trade.notional, now)  # the day may have filled up meanwhile
        order = await self._place(trade)
        with self.ledger_path.open("a") as ledger:
            ledger.write(
                json.dumps({"time": now, "notional": trade.notional, "order": order.model_dump()})
                + "\n"
            )
        events = self.events()
        if events is not None:
            events.critical("fill", {"mode": "live", **order.model_dump()})
        return LiveTrade(status="placed", order=order)

    async def _place(self, trade: PendingTrade) -> LiveOrder:
        import ccxt

        from dexorder.exchanges import make_exchange

        keys_path = self.state_dir / "exchange_keys.json"
        if not keys_path.is_file():
            raise LiveTradingError(
                "no exchange keys set; the person sets them with `dexorder live`"
            )
        keys = json.loads(keys_path.read_text())
        ticker = Ticker.parse(trade.ticker)
        ex_cfg = self.cfg.exchange_config(ticker.exchange)
        exchange = make_exchange(
            ex_cfg.ccxt_id,
            self.cfg.emulator_url if ex_cfg.emulated else None,
            apiKey=keys["apiKey"],
            secret=keys["secret"],
        )
        try:
            placed = await exchange.create_order(
                ticker.symbol, trade.order_type, trade.side, trade.quantity, trade.limit_price
            )
        except ccxt.AuthenticationError as exc:
            raise LiveTradingError(f"the exchange refused the keys: {str(exc)[:200]}") from None
        except ccxt.InsufficientFunds:
            raise LiveTradingError("the exchange account has insufficient funds") from None
        except ccxt.BaseError as exc:
            raise LiveTradingError(f"the exchange refused the order: {str(exc)[:200]}") from None
        finally:
            await exchange.close()
        # CCXT's unified order (a dict of its own), read into the contract's type
        return LiveOrder(
            exchange_order_id=placed.get("id"),
            ticker=trade.ticker,
            side=trade.side,
            quantity=placed.get("filled") or trade.quantity,
            price=placed.get("average") or placed.get("price"),
            status=placed.get("status"),
        )
