"""The web workspace's server side: live candle subscriptions over the chat WebSocket
(fed from the relay, coalesced, capped, market data only), candles for a range, and
the person's own workspace through their agent — against the whole platform."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import talib

import gateway.live
from dexorder.config import Settings
from dexorder.process import free_port
from dexorder.tokens import mint_token
from gateway.live import MAX_SUBSCRIPTIONS, FeedUnavailable, MarketFeed
from launcher.ephemeral import RunningPlatform
from tests.gateway.agent_calls import agent_session
from tests.gateway.served import Served, serve_gateway
from tests.integration.test_realtime_path import trade

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

BTC_1M = "BINANCE:BTC/USDT|ohlc:1m"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(shared_platform: RunningPlatform) -> AsyncIterator[Served]:
    async with serve_gateway(shared_platform.cfg) as s:
        yield s


async def test_subscribe_streams_live_candles_coalesced(
    served: Served, shared_platform: RunningPlatform
) -> None:
    alice = await served.sign_up("sub-alice@example.com")
    async with served.socket(alice["access_token"]) as ws:
        await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": "binance:btc/usdt|ohlc:1m"}))
        assert await ws.until("subscribed") == {"type": "subscribed", "topic": BTC_1M}
        # trades until one reaches the page (the ingestor may still be connecting)
        price = 43_210.5
        for _ in range(120):
            await trade(shared_platform, "BTCUSDT", price, 0.1)
            try:
                frame = await ws.until("ohlc", timeout=0.5)
            except TimeoutError:
                continue
            if frame["close"] == price:
                break
        else:
            raise AssertionError("no live candle reached the socket")
        assert frame["topic"] == BTC_1M and frame["closed"] is False
        # a burst of trades arrives as at most a few updates a second, the last one kept
        t0 = time.monotonic()
        for i in range(40):
            await trade(shared_platform, "BTCUSDT", 43_000 + i, 0.1)
        seen: list[dict[str, object]] = []
        while not seen or seen[-1]["close"] != 43_039:
            seen.append(await ws.until("ohlc", timeout=10))
        elapsed = time.monotonic() - t0
        assert len(seen) <= 4 * elapsed + 2, (len(seen), elapsed)

        await ws.ws.send_str(json.dumps({"type": "unsubscribe", "topic": BTC_1M}))
        await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": "EVENT:x|alert"}))
        error = await ws.until("error")
        assert error["status"] == 400 and "ohlc" in str(error["text"])


async def test_subscriptions_are_checked_and_capped(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_SUBSCRIPTIONS >= 20  # a watchlist and a chart fit
    # the platform follows two tickers: a smaller cap to reach it
    monkeypatch.setattr(gateway.live, "MAX_SUBSCRIPTIONS", 3)
    bob = await served.sign_up("sub-bob@example.com")
    async with served.socket(bob["access_token"]) as ws:
        await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": "KRAKEN:BTC/USD|ohlc:1m"}))
        error = await ws.until("error")
        assert error["status"] == 404 and "KRAKEN" in str(error["text"])
        topics = [f"BINANCE:{b}/USDT|ohlc:{tf}" for b in ("BTC", "ETH") for tf in ("1m", "5m")]
        for topic in topics[:3]:
            await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": topic}))
            assert (await ws.until("subscribed"))["topic"] == topic
        await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": topics[3]}))
        error = await ws.until("error")
        assert error["status"] == 429
        # one given up makes room
        await ws.ws.send_str(json.dumps({"type": "unsubscribe", "topic": topics[0]}))
        await ws.ws.send_str(json.dumps({"type": "subscribe", "topic": topics[3]}))
        assert (await ws.until("subscribed"))["topic"] == topics[3]


async def test_candles_for_a_range(served: Served) -> None:
    token = (await served.sign_up("candles@example.com"))["access_token"]
    q = "ticker=BINANCE:BTC/USDT&timeframe=1h&start=2024-01-01&end=2024-01-03"
    status, body = await served.get(f"/api/candles?{q}", token=token)
    assert status == 200, body
    assert body["ticker"] == "BINANCE:BTC/USDT" and len(body["candles"]) == 48
    assert body["candles"][0][0] == 1704067200000 and len(body["candles"][0]) == 6
    for bad, why in [
        ("ticker=BTC&timeframe=1h&start=2024-01-01&end=2024-01-02", "ticker"),
        ("ticker=BINANCE:BTC/USDT&timeframe=7h&start=2024-01-01&end=2024-01-02", "timeframe"),
        ("ticker=BINANCE:BTC/USDT&timeframe=1h&start=2024-01-03&end=2024-01-02", "before"),
        ("ticker=BINANCE:BTC/USDT&timeframe=1h&start=soon&end=2024-01-02", "date"),
        ("ticker=BINANCE:BTC/USDT&timeframe=1h&end=2024-01-02", "start"),
    ]:
        status, body = await served.get(f"/api/candles?{bad}", token=token)
        assert status == 400 and why in body["error"], (bad, body)
    assert (await served.get(f"/api/candles?{q}"))[0] == 401


async def test_candles_with_progress_while_history_is_fetched(served: Served) -> None:
    token = (await served.sign_up("progress@example.com"))["access_token"]
    q = "ticker=BINANCE:ETH/USDT&timeframe=1h&start=2024-02-01&end=2024-02-03&progress=1"
    async with served.http.get(
        f"{served.url}/api/candles?{q}", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 200 and r.content_type == "application/x-ndjson"
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    progress = [line["progress"] for line in lines[:-1]]
    assert progress and "fetching BINANCE:ETH/USDT 1h history" in progress[0], lines
    assert len(lines[-1]["result"]["candles"]) == 48
    # in the lake now: nothing to fetch, the result alone
    async with served.http.get(
        f"{served.url}/api/candles?{q}", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert len(lines) == 1 and len(lines[0]["result"]["candles"]) == 48
    # bad input is still refused before anything streams
    status, body = await served.get(f"/api/candles?{q.replace('1h', '7h')}", token=token)
    assert status == 400 and "timeframe" in body["error"]


async def test_the_workspace_is_the_callers_own(served: Served) -> None:
    carol = (await served.sign_up("ws-carol@example.com"))["access_token"]
    dave = (await served.sign_up("ws-dave@example.com"))["access_token"]
    status, body = await served.post(
        "/api/workspace/alerts",
        {"ticker": "binance:eth/usdt", "condition": "above", "price": 99_999},
        token=carol,
    )
    assert status == 200, body
    alert_id = body["id"]
    assert body["ticker"] == "BINANCE:ETH/USDT"
    alerts = (await served.get("/api/workspace/alerts", token=carol))[1]["alerts"]
    assert [a["id"] for a in alerts] == [alert_id]
    # another person sees none of it, and cannot delete it
    assert (await served.get("/api/workspace/alerts", token=dave))[1]["alerts"] == []
    status, body = await served.delete(f"/api/workspace/alerts/{alert_id}", token=dave)
    assert status == 400
    status, body = await served.delete(f"/api/workspace/alerts/{alert_id}", token=carol)
    assert status == 200 and body["id"] == alert_id

    status, _ = await served.post(
        "/api/workspace/alerts", {"ticker": "BTC", "condition": "above", "price": 1}, token=carol
    )
    assert status == 400
    status, body = await served.post(
        "/api/workspace/alerts",
        {"ticker": "BINANCE:BTC/USDT", "condition": "sideways", "price": 1},
        token=carol,
    )
    assert status == 400 and "condition" in body["error"]

    async with served.http.put(
        served.url + "/api/workspace/watchlist",
        json={"tickers": ["binance:btc/usdt"]},
        headers={"Authorization": f"Bearer {carol}"},
    ) as r:
        assert r.status == 200 and (await r.json())["watchlist"] == ["BINANCE:BTC/USDT"]
    status, body = await served.get("/api/workspace/watchlist", token=carol)
    assert body["watchlist"] == ["BINANCE:BTC/USDT"]
    status, body = await served.get("/api/workspace/strategies", token=carol)
    assert status == 200 and any(s["name"] == "sma_cross" for s in body["strategies"])
    status, body = await served.get("/api/workspace/strategies/sma_cross", token=carol)
    assert status == 200 and "def " in body["code"]
    status, body = await served.get("/api/workspace/positions", token=carol)
    assert status == 200 and body["positions"] == [] and body["open_orders"] == []
    assert (await served.get("/api/workspace/positions"))[0] == 401


async def test_the_chart_library_is_served(served: Served) -> None:
    async with served.http.get(
        served.url + "/vendor/lightweight-charts.standalone.production.js"
    ) as r:
        assert r.status == 200 and "LightweightCharts" in await r.text()
    async with served.http.get(served.url + "/vendor/README") as r:
        assert r.status == 404


async def test_a_relay_that_does_not_answer_is_told_at_once_after_the_first_wait(
    tmp_path: Path,
) -> None:
    cfg = Settings(home=tmp_path, relay={"router_port": free_port()})  # nobody there
    feed = MarketFeed(cfg)
    t0 = time.monotonic()
    with pytest.raises(FeedUnavailable):
        await feed.add(BTC_1M, lambda topic, candle: None)
    assert time.monotonic() - t0 >= 4  # the relay's answer waited for
    t0 = time.monotonic()
    with pytest.raises(FeedUnavailable, match="does not answer"):
        await feed.add("BINANCE:ETH/USDT|ohlc:1m", lambda topic, candle: None)
    assert time.monotonic() - t0 < 0.5
    feed.close()


async def ndjson(
    served: Served, method: str, path: str, token: str, **kw: Any
) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with served.http.request(method, served.url + path, headers=headers, **kw) as r:
        assert r.status == 200 and r.content_type == "application/x-ndjson", await r.text()
        return [json.loads(line) for line in (await r.text()).splitlines()]


#: An indicator that passes validation (its sample has 400 candles) and fails on others.
FRAGILE = """\"\"\"Fails on real candles.\"\"\"

def compute(candles):
    if len(candles) != 400:
        raise RuntimeError("only works on 400 candles")
    return candles["close"]
"""


async def test_an_indicator_of_the_workspace_computed_in_the_sandbox(served: Served) -> None:
    erin = await served.sign_up("ind-erin@example.com")
    frank = await served.sign_up("ind-frank@example.com")
    token = erin["access_token"]
    status, body = await served.get("/api/workspace/indicators", token=token)
    assert status == 200 and [i["name"] for i in body["indicators"]] == ["rsi"], body

    # the example RSI over 48 hourly candles: the values TA-Lib gives for their closes
    q = "ticker=binance:btc/usdt&timeframe=1h&start=2024-03-01&end=2024-03-03"
    status, series = await served.get(f"/api/workspace/indicators/rsi/series?{q}", token=token)
    assert status == 200, series
    status, candles = await served.get(f"/api/candles?{q}", token=token)
    assert status == 200, candles
    assert series["ticker"] == "BINANCE:BTC/USDT" and series["params"] == {"period": 14}
    assert series["times"] == [row[0] for row in candles["candles"]]
    [line] = series["lines"]
    closes = np.array([row[4] for row in candles["candles"]])
    expected = talib.RSI(closes, timeperiod=14)
    assert line["values"][:14] == [None] * 14  # its warm-up
    assert np.allclose(np.array(line["values"][14:], dtype=float), expected[14:])

    # bad input: 400 with what was wrong, before the agent is asked
    for path, why in [
        (f"/api/workspace/indicators/nope/series?{q}", "no indicator named 'nope'"),
        (f"/api/workspace/indicators/bad-name/series?{q}", "invalid name"),
        (f"/api/workspace/indicators/rsi/series?{q.replace('03-03', '02-03')}", "before"),
        (f"/api/workspace/indicators/rsi/series?{q.replace('1h', '7h')}", "timeframe"),
        (
            "/api/workspace/indicators/rsi/series?ticker=BTC&start=2024-03-01&end=2024-03-02",
            "ticker",
        ),
    ]:
        status, body = await served.get(path, token=token)
        assert status == 400 and why in body["error"], (path, body)
    assert (await served.get(f"/api/workspace/indicators/rsi/series?{q}"))[0] == 401

    # another person's indicator is theirs alone
    f_id = frank["account"]["id"]
    endpoint = await served.gw.provisioner.ensure(f_id, "free")
    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, f_id)) as agent:
        await agent.ok("write_indicator", name="fragile", code=FRAGILE)
    status, body = await served.get(f"/api/workspace/indicators/fragile/series?{q}", token=token)
    assert status == 400 and "no indicator named 'fragile'" in body["error"], body
    assert "fragile" not in str((await served.get("/api/workspace/indicators", token=token))[1])

    # one that raises: its own error, its line, as a 400 (streamed: the error line)
    f_token = frank["access_token"]
    status, body = await served.get(f"/api/workspace/indicators/fragile/series?{q}", token=f_token)
    assert status == 400, body
    assert "line 5: RuntimeError: only works on 400 candles" in body["error"], body
    lines = await ndjson(
        served, "GET", f"/api/workspace/indicators/fragile/series?{q}&progress=1", f_token
    )
    assert lines[-1]["status"] == 400 and "only works on 400" in lines[-1]["error"], lines


async def test_a_backtests_progress_comes_from_the_run_before_its_result(served: Served) -> None:
    signed = await served.sign_up("bt-progress@example.com")
    token = signed["access_token"]
    body = {
        "strategy": "sma_cross",
        "ticker": "BINANCE:BTC/USDT",
        "timeframe": "1h",
        "start": "2024-01-02",
        "end": "2024-01-09",
    }
    lines = await ndjson(served, "POST", "/api/workspace/backtests?progress=1", token, json=body)
    assert "result" in lines[-1] and lines[-1]["result"]["strategy"] == "sma_cross", lines[-1]
    said = [line["progress"] for line in lines[:-1]]
    # the agent's own steps (MCP progress of run_backtest), with how far it got, in order
    steps = [s for s in said if s.endswith("%)")]
    assert [s.rsplit("(", 1)[1] for s in steps] == ["0%)", "33%)", "67%)", "100%)"], said
    assert "running sma_cross on 168 candles in the sandbox (33%)" in steps, said

    # a sweep, called as the chat's turn calls it: each combination told as the sandbox
    # runs it, every step before the result
    user = signed["account"]["id"]
    endpoint = await served.gw.provisioner.ensure(user, "free")
    heard: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, total, message))

    args = {**body, "params": {"fast": [5, 10], "slow": 30}}
    async with agent_session(endpoint.mcp_url, mint_token(served.gw.keys, user)) as agent:
        result = await agent.client.call_tool("run_backtest", args, progress_callback=progress)
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["combinations"] == 2
    messages = [m for _, _, m in heard]
    assert "ran 2 of 2 combinations" in messages, heard
    assert [p for p, _, _ in heard] == sorted(p for p, _, _ in heard), heard

    # and in the chat: the tool's progress frames, with the run's steps, before it is done
    async with served.socket(token) as ws:
        frames = await ws.ask("backtest sma_cross on 1h from 2024-01-02 to 2024-01-09")
    states = [
        (f["state"], f.get("text", ""))
        for f in frames
        if f["type"] == "tool" and f["name"] == "run_backtest"
    ]
    assert states[0][0] == "start" and states[-1] == ("done", ""), states
    told = [text for state, text in states[1:-1] if state == "progress"]
    assert told and told[-1] == "done (100%)", states
    assert any(t.startswith("running sma_cross on 168 candles") for t in told), states
