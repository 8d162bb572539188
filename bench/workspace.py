"""(w) The web workspace: page load → a drawn chart of 1,000 candles, and the live update
rate a WebSocket holds with 20 subscriptions open.

The platform runs as ``dexorder up`` runs it (exchange emulator, relay, stream, lake
writer, gateway), on a fresh home; the page in Debian's Chromium (Playwright). Figures,
each beside a baseline from the same run:

* page load → chart drawn (1,000 1h candles, lake warm), p50/p90 of 10; baseline: a bare
  ``GET /api/candles`` of the same candles, p50 of 10;
* the example RSI over the same candles computed in the person's agent's sandbox
  (``GET /api/workspace/indicators/rsi/series``, what the page draws as an overlay),
  p50 of 10 (agent warm); baseline: the bare ``GET /api/candles`` above;
* ``ohlc`` frames a second at one socket with 20 subscriptions (4 markets by 5 timeframes)
  while the emulator trades each market as fast as the bench can post; per subscription
  at most 4 a second by design; baseline: the trades a second posted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import free_port, pct, row
from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform

RUNS = 10
CANDLES = 1000
HOUR_S = 3600
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h")
LIVE_S = 10.0

#: In the page: a logged-in workspace drawing CANDLES 1h candles, resolved once drawn.
DRAW = """async ([session, count, end]) => {
  setSession(session);
  $("auth").hidden = true; $("workspace").hidden = false;
  makeChart();
  await loadChart("BINANCE:BTC/USDT", "1h", count, end);
  const drawn = Number($("chart").dataset.candles);
  if (drawn !== count) throw new Error("drew " + drawn);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
}"""


#: The end of the range drawn (ms): 2024-03-01, all of it closed candles.
END_MS = 1_709_251_200_000


def _range() -> tuple[int, int]:
    """The range of CANDLES 1h candles the page draws (its loadChart), in ms."""
    return END_MS - CANDLES * HOUR_S * 1000, END_MS


async def _bare_gets(
    http: aiohttp.ClientSession, base: str, token: str, path: str = "/api/candles"
) -> list[float]:
    start, end = _range()
    q = f"ticker=BINANCE:BTC/USDT&timeframe=1h&start={start}&end={end}"
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        async with http.get(f"{base}{path}?{q}", headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            assert r.status == 200, body
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def _page_loads(base: str, session: dict[str, Any]) -> list[float]:
    from playwright.async_api import async_playwright

    times = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            for _ in range(RUNS):
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                t0 = time.perf_counter()
                await page.goto(base + "/")
                await page.evaluate(DRAW, [session, CANDLES, END_MS])
                times.append((time.perf_counter() - t0) * 1000)
                await context.close()
        finally:
            await browser.close()
    return times


async def _live_rate(
    http: aiohttp.ClientSession, p: RunningPlatform, token: str
) -> tuple[float, float, float]:
    """(ohlc frames/s at the socket, the busiest subscription's frames/s, trades/s posted)."""
    base = p.cfg.gateway.url
    async with http.ws_connect(base.replace("http", "ws") + "/api/chat/ws") as ws:
        await ws.send_str(json.dumps({"type": "auth", "token": token}))
        assert json.loads((await ws.receive()).data)["type"] == "ready"
        topics = [f"BINANCE:{s}|ohlc:{tf}" for s in SYMBOLS for tf in TIMEFRAMES]
        for topic in topics:
            await ws.send_str(json.dumps({"type": "subscribe", "topic": topic}))
            while True:
                frame = json.loads((await ws.receive(timeout=30)).data)
                if frame["type"] == "subscribed":
                    break
                assert frame["type"] != "error", frame
        per_topic: Counter[str] = Counter()
        trades = 0
        stop = asyncio.Event()

        async def trade_hard() -> None:
            nonlocal trades
            price = 100.0
            while not stop.is_set():
                for s in SYMBOLS:
                    price += 0.5
                    body = {"symbol": s.replace("/", ""), "price": price, "qty": 0.01}
                    async with http.post(f"{p.cfg.emulator_url}/emulator/trades", json=body) as r:
                        await r.read()
                    trades += 1

        # warm: the ingestors may still be connecting to the new markets
        trader = asyncio.create_task(trade_hard())
        async with asyncio.timeout(120):
            while True:
                frame = json.loads((await ws.receive()).data)
                if frame["type"] == "ohlc":
                    break
        trades = 0
        t0 = time.perf_counter()
        while (left := LIVE_S - (time.perf_counter() - t0)) > 0:
            try:
                msg = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "ohlc":
                per_topic[frame["topic"]] += 1
        elapsed = time.perf_counter() - t0
        stop.set()
        await trader
    total = sum(per_topic.values())
    busiest = max(per_topic.values(), default=0)
    return total / elapsed, busiest / elapsed, trades / elapsed


async def _run(home: Path) -> dict[str, float]:
    env = ephemeral_env(
        home,
        DEXORDER_GATEWAY__ENABLED="true",
        DEXORDER_EXCHANGES=json.dumps([{"health_port": free_port(), "symbols": list(SYMBOLS)}]),
    )
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        p = start_platform(env)
    try:
        base = p.cfg.gateway.url
        async with aiohttp.ClientSession() as http:
            body = {"email": "bench@example.com", "password": "bench password 123"}
            async with http.post(f"{base}/api/auth/signup", json=body) as r:
                session = await r.json()
                assert r.status == 201, session
            token = session["access_token"]
            await _bare_gets(http, base, token)  # warm: the lake backfilled once
            bare = await _bare_gets(http, base, token)
            page = await _page_loads(base, session)
            series = "/api/workspace/indicators/rsi/series"
            await _bare_gets(http, base, token, series)  # warm: the agent started
            indicator = await _bare_gets(http, base, token, series)
            rate, busiest, trades = await _live_rate(http, p, token)
    finally:
        p.stop()
    return {
        "bare_get_p50_ms": pct(bare, 50),
        "page_chart_p50_ms": pct(page, 50),
        "page_chart_p90_ms": pct(page, 90),
        "indicator_p50_ms": pct(indicator, 50),
        "live_frames_s": rate,
        "live_busiest_sub_s": busiest,
        "trades_s": trades,
    }


def main() -> dict[str, float]:
    print(f"workspace: page → chart of {CANDLES:,} candles ({RUNS} runs), live updates")
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(_run(Path(tmp) / "home"))
    row("baseline: bare GET /api/candles (1,000)", f"p50 {r['bare_get_p50_ms']:.0f} ms")
    row(
        "page load → chart drawn (1,000 candles)",
        f"p50 {r['page_chart_p50_ms']:.0f} ms",
        f"p90 {r['page_chart_p90_ms']:.0f} ms",
    )
    row("indicator rsi over them in the sandbox", f"p50 {r['indicator_p50_ms']:.0f} ms")
    row("baseline: trades posted at the emulator", f"{r['trades_s']:.0f}/s")
    row(
        f"ohlc frames at one socket, {len(SYMBOLS) * len(TIMEFRAMES)} subscriptions",
        f"{r['live_frames_s']:.1f}/s",
        f"busiest subscription {r['live_busiest_sub_s']:.1f}/s (cap 4/s)",
    )
    return r


if __name__ == "__main__":
    main()
