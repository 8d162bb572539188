"""Binance's signed spot account API, for live-trading tests against unmodified CCXT.

``GET /api/v3/account`` and ``POST /api/v3/order`` (MARKET fills at once at the
last trade price, LIMIT rests ``NEW`` until a trade reaches it), with
Binance's request signing: ``X-MBX-APIKEY`` header, ``timestamp`` and
``recvWindow``, and ``signature`` = HMAC-SHA256 of the query string (or form
body) with the account's secret. Errors answer as Binance does:
``-2014``/``-2015`` (key), ``-1022`` (signature), ``-1021`` (timestamp),
``-2010`` (insufficient balance), ``-1013`` (filters).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

#: The built-in test account of the emulator (not Binance's).
TEST_API_KEY = "dexorder-emulator-key"
TEST_API_SECRET = "dexorder-emulator-secret"


class SignedError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class Account:
    secret: str
    balances: dict[str, float] = field(default_factory=lambda: {"USDT": 100_000.0, "BTC": 1.0})
    orders: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Accounts:
    """API keys → accounts; the emulator's control API can add more."""

    by_key: dict[str, Account] = field(
        default_factory=lambda: {TEST_API_KEY: Account(TEST_API_SECRET)}
    )
    next_order_id: int = 1


def _fmt(x: float) -> str:
    return f"{x:.8f}"


async def _signed_params(
    accounts: Accounts, request: web.Request, now_ms: int
) -> tuple[Account, dict[str, str]]:
    key = request.headers.get("X-MBX-APIKEY", "")
    if not key:
        raise SignedError(401, -2014, "API-key format invalid.")
    account = accounts.by_key.get(key)
    if account is None:
        raise SignedError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    query = request.query_string
    body = (await request.text()) if request.method == "POST" else ""
    payload = "&".join(p for p in (query, body) if p)
    pairs = parse_qsl(payload, keep_blank_values=True)
    params = dict(pairs)
    signature = params.pop("signature", "")
    signed = "&".join(p for p in payload.split("&") if not p.startswith("signature="))
    expected = hmac.new(account.secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, expected):
        raise SignedError(400, -1022, "Signature for this request is not valid.")
    try:
        ts = int(params.get("timestamp", ""))
        window = int(params.get("recvWindow", "5000"))
    except ValueError:
        raise SignedError(400, -1102, "Mandatory parameter 'timestamp' was not sent.") from None
    if not (ts - 1000 <= now_ms <= ts + window):
        raise SignedError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
    return account, params


def add_account_routes(
    app: web.Application,
    accounts: Accounts,
    now_ms: Callable[[], int],
    last_price: Callable[[str], float | None],
    markets: Callable[[str], tuple[str, str] | None],
) -> None:
    """Serve the signed endpoints on ``app``; prices and markets come from the emulator."""

    def errors(handler: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                response: web.Response = await handler(request)
                return response
            except SignedError as exc:
                return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status)

        return wrapped

    @errors
    async def account_info(request: web.Request) -> web.Response:
        account, _ = await _signed_params(accounts, request, now_ms())
        return web.json_response(
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "canTrade": True,
                "canWithdraw": False,
                "canDeposit": False,
                "updateTime": now_ms(),
                "accountType": "SPOT",
                "balances": [
                    {"asset": a, "free": _fmt(v), "locked": "0.00000000"}
                    for a, v in sorted(account.balances.items())
                ],
                "permissions": ["SPOT"],
            }
        )

    @errors
    async def new_order(request: web.Request) -> web.Response:
        account, p = await _signed_params(accounts, request, now_ms())
        symbol = p.get("symbol", "").upper()
        assets = markets(symbol)
        if assets is None:
            raise SignedError(400, -1121, "Invalid symbol.")
        base, quote = assets
        side, kind = p.get("side", "").upper(), p.get("type", "").upper()
        if side not in ("BUY", "SELL"):
            raise SignedError(400, -1102, "Mandatory parameter 'side' was not sent.")
        if kind not in ("MARKET", "LIMIT"):
            raise SignedError(400, -1116, "Invalid orderType.")
        try:
            qty = float(p["quantity"])
        except (KeyError, ValueError):
            raise SignedError(400, -1102, "Mandatory parameter 'quantity' was not sent.") from None
        last = last_price(symbol)
        price = float(p["price"]) if kind == "LIMIT" and "price" in p else last
        if price is None or qty <= 0:
            raise SignedError(400, -1013, "Filter failure: NOTIONAL")
        if qty * price < 5:
            raise SignedError(400, -1013, "Filter failure: NOTIONAL")
        fills_now = kind == "MARKET" or (
            last is not None
            and ((side == "BUY" and last <= price) or (side == "SELL" and last >= price))
        )
        fill_price = last if kind == "MARKET" else price
        cost = qty * (fill_price or price)
        if side == "BUY" and account.balances.get(quote, 0.0) < cost * 1.001:
            raise SignedError(400, -2010, "Account has insufficient balance for requested action.")
        if side == "SELL" and account.balances.get(base, 0.0) < qty:
            raise SignedError(400, -2010, "Account has insufficient balance for requested action.")
        order_id = accounts.next_order_id
        accounts.next_order_id += 1
        status = "FILLED" if fills_now else "NEW"
        fills = []
        if fills_now:
            assert fill_price is not None
            fee = qty * fill_price * 0.001
            sign = 1 if side == "BUY" else -1
            account.balances[base] = account.balances.get(base, 0.0) + sign * qty
            account.balances[quote] = (
                account.balances.get(quote, 0.0) - sign * qty * fill_price - fee
            )
            fills.append(
                {
                    "price": _fmt(fill_price),
                    "qty": _fmt(qty),
                    "commission": _fmt(fee),
                    "commissionAsset": quote,
                    "tradeId": order_id,
                }
            )
        order = {
            "symbol": symbol,
            "orderId": order_id,
            "orderListId": -1,
            "clientOrderId": p.get("newClientOrderId", f"emu{order_id}"),
            "transactTime": now_ms(),
            "price": _fmt(price if kind == "LIMIT" else 0.0),
            "origQty": _fmt(qty),
            "executedQty": _fmt(qty if fills_now else 0.0),
            "cummulativeQuoteQty": _fmt(qty * fill_price if fills_now and fill_price else 0.0),
            "status": status,
            "timeInForce": p.get("timeInForce", "GTC"),
            "type": kind,
            "side": side,
            "workingTime": now_ms(),
            "fills": fills,
            "selfTradePreventionMode": "NONE",
        }
        account.orders.append(order)
        return web.json_response(order)

    @errors
    async def nothing(request: web.Request) -> web.Response:
        """Margin pairs and currency networks: none here (CCXT asks when it has keys)."""
        await _signed_params(accounts, request, now_ms())
        return web.json_response([])

    for path in (
        "/sapi/v1/margin/allPairs",
        "/sapi/v1/margin/isolated/allPairs",
        "/sapi/v1/capital/config/getall",
    ):
        app.router.add_get(path, nothing)
    app.router.add_get("/api/v3/account", account_info)
    app.router.add_post("/api/v3/order", new_order)
