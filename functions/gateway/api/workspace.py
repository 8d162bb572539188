"""The web workspace's HTTP API: a market's candles for a range, and the person's
watchlist, alerts, paper positions and orders, strategies and backtests, each through
their own agent (its MCP tools, as the harness calls them). Every endpoint takes the
caller's bearer token (a login session or a personal access token, so scripts may use
them too) and reaches only the caller's agent.

- ``GET /api/candles?ticker=&timeframe=&start=&end=``: :class:`~dexorder.contracts.
  workspace.Candles` (the lake's, backfilled when missing; ``start``/``end`` a date,
  an ISO time or epoch ms). 400 bad input, 404 none in the range, 503 lake/relay away.
- ``GET|PUT /api/workspace/watchlist`` (:class:`WatchlistBody`)
- ``GET|POST /api/workspace/alerts`` (:class:`AlertBody`), ``DELETE .../alerts/{id}``
- ``GET /api/workspace/positions``; ``POST /api/workspace/orders`` (a paper order,
  :class:`OrderBody`), ``DELETE .../orders/{id}``
- ``GET /api/workspace/strategies``, ``GET .../strategies/{name}``
- ``POST /api/workspace/backtests`` (:class:`BacktestBody`)
- ``GET /api/workspace/indicators``; ``GET .../indicators/{name}/series?ticker=&timeframe=
  &start=&end=&params=``: the person's indicator computed over the range's candles in their
  agent's sandbox (:class:`~dexorder.contracts.agent_tools.IndicatorSeries`), ``params`` a
  JSON object of its parameters (its ``PARAMS`` for those not given); 400 unknown
  indicator, bad range, parameters it does not take or of the wrong kind, or the
  indicator's own error (its line and message)

An agent's refusal (no such alert, a bad ticker) is a 400 with its message. Candles and
backtests take ``?progress=1``: the answer is then NDJSON, lines of progress while missing
history is fetched from the exchange, then the result or the error (bad input is still
refused with its status before anything streams); a backtest's lines then include the
run's own steps, as its agent reports them (MCP progress).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from dexorder.client import backfill
from dexorder.config import Settings
from dexorder.contracts import agent_tools as tools
from dexorder.contracts.agent_tools import AgentTool, ToolResult
from dexorder.contracts.chat import JsonObject
from dexorder.contracts.workspace import (
    MAX_BARS,
    AlertBody,
    BacktestBody,
    Bar,
    Candles,
    ErrorLine,
    OrderBody,
    ProgressLine,
    ResultLine,
    WatchlistBody,
    encode,
)
from dexorder.indicator_params import ParamError, parse_params
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.times import iso, parse_when
from gateway.api.common import answers_refusals, caller, gateway_of, typed_body
from gateway.harness.agent_link import AgentLink
from gateway.live import MarketFeed
from gateway.provisioning import ProvisioningError
from gateway.service import Caller, Gateway, Refused

VENDOR = Path(__file__).resolve().parent.parent / "page" / "vendor"
#: The vendored files the page loads (nothing else under vendor/ is served).
VENDORED = frozenset({"lightweight-charts.standalone.production.js", "LICENSE"})
#: The longest ``?params=`` of an indicator's series.
MAX_PARAMS_TEXT = 4000


def feed_of(conn: Any) -> MarketFeed:
    """The app's one feed of live candles (made at first use)."""
    state = conn.app.state
    feed: MarketFeed | None = getattr(state, "market_feed", None)
    if feed is None:
        feed = state.market_feed = MarketFeed(gateway_of(conn).cfg)
    return feed


def _json(value: ToolResult) -> Response:
    return Response(value.model_dump_json(by_alias=True), media_type="application/json")


Say = Callable[[str], None]
Work = Callable[[Say], Awaitable[bytes]]


async def _answer(request: Request, work: Work) -> Response:
    """``work``'s JSON; with ``?progress=1`` NDJSON: its progress lines, then its result
    (or the error it ended with, the status already sent)."""
    if request.query_params.get("progress") != "1":
        return Response(await work(lambda _: None), media_type="application/json")
    return StreamingResponse(_lines(work), media_type="application/x-ndjson")


async def _lines(work: Work) -> AsyncIterator[bytes]:
    said: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.ensure_future(work(said.put_nowait))
    try:
        while not task.done() or not said.empty():
            getter = asyncio.ensure_future(said.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield encode(ProgressLine(progress=getter.result())) + b"\n"
            else:
                getter.cancel()
        try:
            result = task.result()
        except Refused as exc:
            yield encode(ErrorLine(error=exc.message, status=exc.status)) + b"\n"
        else:
            yield encode(ResultLine(result=msgspec.Raw(result))) + b"\n"
    finally:
        task.cancel()


async def _backfilled(cfg: Settings, ticker: str, tf: str, start: int, end: int, say: Say) -> None:
    """The lake holds ``[start, end)`` of the market, fetched from the exchange first if
    it lacks some (saying how far it got); 503 if that fails."""
    from dexorder.lake.query import lake_missing
    from dexorder.lake.table import ohlc_table, open_catalog

    try:
        table = await asyncio.to_thread(lambda: ohlc_table(open_catalog(cfg), cfg.lake.namespace))
        missing = await asyncio.to_thread(lake_missing, table, ticker, tf, start, end)
    except OSError as exc:
        raise Refused(503, f"the lake is unavailable: {exc}") from None
    if not missing:
        return
    say(f"fetching {ticker} {tf} history from the exchange")
    ready = await backfill(
        ticker,
        tf,
        start,
        end,
        config=cfg,
        timeout_s=120,
        on_progress=lambda fetched, total: say(f"fetched {fetched:,} of {total:,} candles"),
    )
    if ready.error:
        raise Refused(503, f"fetching the history failed: {ready.error}")


def _when(text: str | None, name: str) -> int:
    if not text:
        raise Refused(400, f"'{name}' is required (a date, an ISO time or epoch ms)")
    if text.isdigit():
        return int(text)
    try:
        return parse_when(text)
    except ValueError as exc:
        raise Refused(400, f"'{name}': {exc}") from None


def _market(ticker: str, timeframe: str | None = None) -> tuple[str, str]:
    try:
        t = str(Ticker.parse(ticker))
        tf = Timeframe.parse(timeframe).value if timeframe is not None else ""
    except (InvalidTicker, InvalidTimeframe) as exc:
        raise Refused(400, str(exc)) from None
    return t, tf


async def call_agent(
    gw: Gateway, who: Caller, tool: AgentTool[Any], args: JsonObject, say: Say | None = None
) -> Any:
    """``tool``'s typed result from ``who``'s own agent (started if asleep); its error as
    a 400, an agent that cannot be reached as a 503. ``say`` hears the tool's progress."""

    async def heard(text: str, fraction: float | None) -> None:
        if say is not None and text:
            say(f"{text} ({fraction:.0%})" if fraction is not None else text)

    try:
        endpoint = await gw.provisioner.ensure(who.id, who.account.tier)
    except ProvisioningError as exc:
        raise Refused(exc.status, str(exc)) from None
    links = gw.harness.links
    for attempt in (1, 2):  # one fresh session if the held one broke
        link: AgentLink = await links.get(
            who.id, endpoint.mcp_url, lambda: gw.harness.agent_token(who.id)
        )
        try:
            outcome = await link.call(tool.name, args, heard if say is not None else None)
            break
        except Exception as exc:
            await links.drop(who.id)
            if attempt == 2:
                raise Refused(503, f"your agent did not answer: {type(exc).__name__}") from None
        finally:
            links.release(who.id)
    if outcome.is_error:
        raise Refused(400, str(outcome.value))
    if tool.traits.changes_context:  # the next turn must not see the old watchlist
        gw.harness.context.forget(who.id)
    return outcome.value


@answers_refusals
async def candles(request: Request) -> Response:
    from dexorder.lake.candles import MarketDataError, load_candles  # pandas: when asked

    caller(request)  # market data, but still only for people of the platform
    q = request.query_params
    ticker, tf = _market(q.get("ticker", ""), q.get("timeframe", "1h"))
    start, end = _when(q.get("start"), "start"), _when(q.get("end"), "end")
    if end <= start:
        raise Refused(400, "start must be before end")
    cfg = gateway_of(request).cfg

    async def work(say: Say) -> bytes:
        await _backfilled(cfg, ticker, tf, start, end, say)
        try:
            frame = await load_candles(cfg, ticker, tf, start, end)
        except MarketDataError as exc:
            status = 404 if str(exc).startswith("no ") else 400
            if "fetching them failed" in str(exc):
                status = 503
            raise Refused(status, str(exc)) from None
        except OSError as exc:  # the lake's storage away
            raise Refused(503, f"the lake is unavailable: {exc}") from None
        return _bars(ticker, tf, frame)

    return await _answer(request, work)


def _bars(ticker: str, tf: str, frame: Any) -> bytes:
    tail = frame.tail(MAX_BARS)
    rows: list[Bar] = [
        (int(ts.timestamp() * 1000), float(o), float(h), float(lo), float(c), float(v))
        for ts, (o, h, lo, c, v) in zip(
            tail.index,
            tail[["open", "high", "low", "close", "volume"]].to_numpy(),
            strict=True,
        )
    ]
    return encode(Candles(ticker=ticker, timeframe=tf, candles=rows))


def _agent_route(tool: AgentTool[Any]) -> Any:
    @answers_refusals
    async def handler(request: Request) -> Response:
        gw, who = gateway_of(request), caller(request)
        args: JsonObject = dict(request.path_params)
        return _json(await call_agent(gw, who, tool, args))

    return handler


@answers_refusals
async def put_watchlist(request: Request) -> Response:
    gw, who = gateway_of(request), caller(request)
    body = await typed_body(request, WatchlistBody)
    if len(body.tickers) > 100:
        raise Refused(413, "at most 100 tickers in a watchlist")
    tickers: list[object] = [_market(t)[0] for t in body.tickers]
    return _json(await call_agent(gw, who, tools.SET_WATCHLIST, {"tickers": tickers}))


@answers_refusals
async def post_alert(request: Request) -> Response:
    gw, who = gateway_of(request), caller(request)
    body = await typed_body(request, AlertBody)
    if not body.price > 0:
        raise Refused(400, "'price' must be above 0")
    args: JsonObject = {
        "ticker": _market(body.ticker)[0],
        "condition": body.condition,
        "price": body.price,
        "note": body.note[:500],
    }
    return _json(await call_agent(gw, who, tools.SET_ALERT, args))


@answers_refusals
async def post_order(request: Request) -> Response:
    gw, who = gateway_of(request), caller(request)
    body = await typed_body(request, OrderBody)
    if not body.quantity > 0:
        raise Refused(400, "'quantity' must be above 0")
    if body.order_type != "market" and not (body.limit_price or 0) > 0:
        raise Refused(400, f"a {body.order_type} order needs a 'limit_price' above 0")
    args: JsonObject = {
        "ticker": _market(body.ticker)[0],
        "side": body.side,
        "quantity": body.quantity,
        "order_type": body.order_type,
        "limit_price": body.limit_price,
        "mode": "paper",  # a live order is confirmed in the chat, never from a button
    }
    return _json(await call_agent(gw, who, tools.EXECUTE_TRADE, args))


@answers_refusals
async def post_backtest(request: Request) -> Response:
    gw, who = gateway_of(request), caller(request)
    body = await typed_body(request, BacktestBody)
    ticker, tf = _market(body.ticker, body.timeframe)
    start, end = _when(body.start, "start"), _when(body.end, "end")
    if end <= start:
        raise Refused(400, "start must be before end")
    args: JsonObject = {
        "strategy": body.strategy,
        "ticker": ticker,
        "timeframe": tf,
        "start": body.start,
        "end": body.end,
    }

    async def work(say: Say) -> bytes:
        # the history first, here, where its progress can be told; then the agent runs it
        await _backfilled(gw.cfg, ticker, tf, start, end, say)
        say(f"running {body.strategy} on {ticker} {tf}")
        run: ToolResult = await call_agent(gw, who, tools.RUN_BACKTEST, args, say)
        return run.model_dump_json(by_alias=True).encode()

    return await _answer(request, work)


def _params(text: str | None) -> JsonObject:
    """``?params=`` (a JSON object of names to scalars) as sent, or a 400 saying why not."""
    if not text:
        return {}
    if len(text) > MAX_PARAMS_TEXT:
        raise Refused(400, f"params is longer than {MAX_PARAMS_TEXT} characters")
    try:
        given = parse_params(text)
    except ParamError as exc:
        raise Refused(400, str(exc)) from None
    return dict(given)


@answers_refusals
async def indicator_series(request: Request) -> Response:
    gw, who = gateway_of(request), caller(request)
    q = request.query_params
    ticker, tf = _market(q.get("ticker", ""), q.get("timeframe", "1h"))
    start, end = _when(q.get("start"), "start"), _when(q.get("end"), "end")
    if end <= start:
        raise Refused(400, "start must be before end")
    args: JsonObject = {
        "name": request.path_params["name"],
        "ticker": ticker,
        "timeframe": tf,
        "start": iso(start),
        "end": iso(end),
        # their shape here; names and kinds against the indicator's PARAMS by the agent,
        # which reads its file (the same check, dexorder.indicator_params)
        "params": _params(q.get("params")),
    }

    async def work(say: Say) -> bytes:
        # the candles first, here (the agent reads the lake; it does not fetch history)
        await _backfilled(gw.cfg, ticker, tf, start, end, say)
        series: ToolResult = await call_agent(gw, who, tools.COMPUTE_INDICATOR, args, say)
        return series.model_dump_json().encode()

    return await _answer(request, work)


async def vendored(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in VENDORED:
        return Response("not found", status_code=404, media_type="text/plain")
    # versioned by the page's own reload; a day is enough and a new release changes it
    return FileResponse(VENDOR / name, headers={"Cache-Control": "public, max-age=86400"})


_W = "/api/workspace"

routes = [
    Route("/vendor/{name}", vendored),
    Route("/api/candles", candles),
    Route(f"{_W}/watchlist", _agent_route(tools.GET_WATCHLIST)),
    Route(f"{_W}/watchlist", put_watchlist, methods=["PUT"]),
    Route(f"{_W}/alerts", _agent_route(tools.LIST_ALERTS)),
    Route(f"{_W}/alerts", post_alert, methods=["POST"]),
    Route(f"{_W}/alerts/{{alert_id}}", _agent_route(tools.DELETE_ALERT), methods=["DELETE"]),
    Route(f"{_W}/positions", _agent_route(tools.GET_POSITIONS)),
    Route(f"{_W}/orders", post_order, methods=["POST"]),
    Route(f"{_W}/orders/{{order_id}}", _agent_route(tools.CANCEL_ORDER), methods=["DELETE"]),
    Route(f"{_W}/strategies", _agent_route(tools.LIST_STRATEGIES)),
    Route(f"{_W}/strategies/{{name}}", _agent_route(tools.READ_STRATEGY)),
    Route(f"{_W}/backtests", post_backtest, methods=["POST"]),
    Route(f"{_W}/indicators", _agent_route(tools.LIST_INDICATORS)),
    Route(f"{_W}/indicators/{{name}}/series", indicator_series),
]
