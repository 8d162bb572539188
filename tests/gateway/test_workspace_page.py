"""The web workspace in headless Chromium (Debian's, driven by Playwright) against the
platform `dexorder up` runs (exchange emulator, relay, stream, lake writer, gateway,
triggers; one for the module): the chart draws candles and follows trades live (a
closed candle arriving after the next one's updates replaces its bar), the
watchlist's prices move, an indicator of the person's workspace is drawn over the chart
(its parameters set and edited, its line following closing candles),
an alert made in its panel fires and is shown, a backtest from the strategies panel
shows its metrics and chart, a paper order's fill reaches the positions, the page fits
a phone, and it reconnects when the gateway restarts.
No test may leave an error in the browser's console."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import talib
import zmq
import zmq.asyncio
from playwright.async_api import Browser, Page, async_playwright

from dexorder.relay_keys import connect_publisher, publisher
from dexorder.schemas import Candle, encode
from dexorder.topics import ohlc_topic
from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform
from tests.gateway.agent_calls import agent_session
from tests.gateway.page_reading import pixels, text_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (apt)"),
]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    env = ephemeral_env(
        tmp_path_factory.mktemp("workspace") / "home",
        DEXORDER_GATEWAY__ENABLED="true",
        DEXORDER_STREAM__CHECKPOINT_INTERVAL_MS="200",
    )
    with in_environment(env, drop=("KAFKA_BOOTSTRAP_SERVERS",)):
        p = start_platform(env)
        try:
            yield p
        finally:
            p.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def workspace(
    browser: Browser, up: RunningPlatform, email: str, allowed: str = "\0"
) -> AsyncIterator[Page]:
    """A signed-up person's workspace; on leaving, no error may be in its console (but
    for messages holding ``allowed``)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(up.cfg.gateway.url + "/")
        await page.fill("#email", email)
        await page.fill("#password", "correct horse battery")
        await page.click("#signup")
        await page.wait_for_function(f"document.querySelector('#who').textContent === '{email}'")
        yield page
        assert [e for e in errors if allowed not in e] == [], errors
    finally:
        await context.close()


async def trade(
    http: aiohttp.ClientSession, up: RunningPlatform, symbol: str, price: float
) -> None:
    body = {"symbol": symbol, "price": price, "qty": 0.5}
    async with http.post(f"{up.cfg.emulator_url}/emulator/trades", json=body) as r:
        assert r.status == 200, await r.text()


async def trade_until(
    up: RunningPlatform, symbol: str, price: float, page: Page, js: str, timeout: float = 90
) -> None:
    """Trade ``symbol`` at ``price`` (again and again: the ingestor may still be
    connecting) until ``js`` is true in ``page``."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout):
        while True:
            await trade(http, up, symbol, price)
            with contextlib.suppress(Exception):
                await page.wait_for_function(js, timeout=500)
                return


def coloured(shot: bytes) -> tuple[int, int]:
    """Rising-green and falling-red pixels of a chart's screenshot."""
    px = pixels(shot, 2)
    green = sum(1 for c in px if c[1] > 140 and c[0] < 90)  # #26a69a
    red = sum(1 for c in px if c[0] > 200 and c[1] < 110)  # #ef5350
    return green, red


async def test_chart_live_watchlist_and_phone_width(
    browser: Browser, up: RunningPlatform, tmp_path: Path
) -> None:
    async with workspace(browser, up, "chart@example.com") as page:
        assert not await page.locator("#auth").is_visible()  # the form is gone
        assert await page.locator("#chart").is_visible()
        # history from the lake (backfilled from the exchange on first use)
        await page.wait_for_function(
            "Number(document.querySelector('#chart').dataset.candles || 0) > 100", timeout=120_000
        )
        assert await page.locator("#chart-loading").is_hidden()
        shot = await page.locator("#chart").screenshot()
        (tmp_path / "chart.png").write_bytes(shot)
        green, red = coloured(shot)
        assert green > 20 and red > 20, "the chart drew no candles"

        # the open candle follows the exchange: warm the live path, then time one trade
        await trade_until(
            up,
            "BTCUSDT",
            70_100.5,
            page,
            "document.querySelector('#chart-last').dataset.price === '70100.5'",
        )
        async with aiohttp.ClientSession() as http:
            t0 = time.monotonic()
            await trade(http, up, "BTCUSDT", 70_222.25)
            await page.wait_for_function(
                "document.querySelector('#chart-last').dataset.price === '70222.25'",
                timeout=2_000,
            )
        assert time.monotonic() - t0 < 2.0

        # the watchlist: add a ticker, its price moves live
        await page.fill("#wl-ticker", "binance:eth/usdt")
        await page.press("#wl-ticker", "Enter")  # keyboard-usable
        row = page.locator("#watchlist tr[data-ticker='BINANCE:ETH/USDT']")
        await row.wait_for(timeout=30_000)
        await trade_until(
            up,
            "ETHUSDT",
            3_456.5,
            page,
            "document.querySelector(\"#watchlist tr[data-ticker='BINANCE:ETH/USDT'] .wl-last\")"
            ".dataset.price === '3456.5'",
        )
        # clicking it charts it
        await row.locator("button.linklike").click()
        await page.wait_for_function(
            "document.querySelector('#chart').getAttribute('aria-label').startsWith('BINANCE:ETH')",
            timeout=120_000,
        )

        # phone width: the panels stack, nothing scrolls sideways
        await page.set_viewport_size({"width": 375, "height": 800})
        await page.wait_for_timeout(300)  # the chart's own resize observer
        width = await page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], width
        (tmp_path / "phone.png").write_bytes(await page.screenshot(full_page=True))


#: JS: the chart's candle and volume bar at ``m`` (seconds), as lightweight-charts holds them.
BAR_AT = """(m) => [chart.candles.data().find(b => b.time === m) || null,
  chart.volume.data().find(b => b.time === m) || null]"""


async def test_a_closed_candle_after_the_next_ones_updates_replaces_its_bar(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "late@example.com") as page:
        # the 1h chart, its last bar (hour M+1) already following the live updates
        await page.wait_for_function(
            "Number(document.querySelector('#chart').dataset.candles || 0) > 100", timeout=120_000
        )
        updated = "Number(document.querySelector('#chart').dataset.updates || 0) > 0"
        await trade_until(up, "BTCUSDT", 70_100.5, page, updated)
        last = int(await page.evaluate("chart.lastTime"))
        m = last - 3600
        seen, _ = await page.evaluate(BAR_AT, m)
        assert seen is not None, "hour M is not on the chart"
        # hour M's closed candle, other than the bar shown, as the relay delivers it late
        late = Candle(
            exchange="BINANCE",
            symbol="BTC/USDT",
            timeframe="1h",
            open_time=m * 1000,
            open=seen["open"],
            high=seen["high"] + 10.5,
            low=seen["low"] - 4.25,
            close=seen["open"] + 0.5,
            volume=1234.5,
            trades=77,
            closed=True,
        )
        topic = ohlc_topic("BINANCE:BTC/USDT", "1h").encode()
        # published as the stream part does (its key), into an XPUB: it shows when the
        # relay has passed the gateway's subscription on, so the candle is not dropped
        pub = zmq.asyncio.Context.instance().socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        connect_publisher(pub, publisher(up.cfg, "stream"))
        try:
            async with asyncio.timeout(30):
                while (msg := await pub.recv())[0] != 1 or not topic.startswith(msg[1:]):
                    pass
            await pub.send_multipart([topic, encode(late)])
            want = [late.open, late.high, late.low, late.close, late.volume]
            await page.wait_for_function(
                f"""([m, w]) => {{ const [b, v] = ({BAR_AT})(m);
                  return !!b && !!v && [b.open, b.high, b.low, b.close, v.value].every(
                    (x, i) => x === w[i]); }}""",
                arg=[m, want],
                timeout=10_000,
            )
        finally:
            pub.close()
        bar, volume = await page.evaluate(BAR_AT, m)
        assert volume["color"] == "#a5d6a7"  # a rising candle's volume colour
        assert [bar[k] for k in ("open", "high", "low", "close")] == want[:4]
        # the chart stays on its last bar; hour M's close reached the page as closed
        assert int(await page.evaluate("chart.lastTime")) >= last
        assert int(await page.evaluate("chart.candles.data().at(-1).time")) >= last
        closed = await page.evaluate("document.querySelector('#chart').dataset.closed")
        assert int(closed) >= m * 1000


#: An indicator that passes validation (its sample has 400 candles) and fails on others.
FRAGILE = """\"\"\"Fails on real candles.\"\"\"

def compute(candles):
    if len(candles) != 400:
        raise RuntimeError("only works on 400 candles")
    return candles["close"]
"""


async def write_indicator(up: RunningPlatform, session_token: str, name: str, code: str) -> None:
    """Write an indicator into the person's workspace as an MCP client would (their
    personal access token, through the gateway's door)."""
    base = up.cfg.gateway.url
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/api/tokens",
            json={"name": "test"},
            headers={"Authorization": f"Bearer {session_token}"},
        ) as r,
    ):
        pat = await r.json()
        assert r.status == 201, pat
    async with agent_session(f"{base}/mcp", pat["token"]) as agent:
        await agent.ok("write_indicator", name=name, code=code)


def orange(shot: bytes) -> int:
    """Pixels of the first indicator overlay's colour (#ff6d00) in a chart's screenshot."""
    return sum(1 for r, g, b in pixels(shot) if r > 220 and 80 < g < 150 and b < 60)


async def test_an_indicator_of_the_workspace_drawn_over_the_chart(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "overlay@example.com") as page:
        await page.wait_for_function(
            "Number(document.querySelector('#chart').dataset.candles || 0) > 100", timeout=120_000
        )
        assert orange(await page.locator("#chart").screenshot()) == 0
        # the person's indicators are offered; the example RSI is drawn over the candles
        await page.wait_for_function(
            "[...document.querySelectorAll('#ind-pick option')].some(o => o.value === 'rsi')",
            timeout=60_000,
        )
        await page.select_option("#ind-pick", "rsi")
        await page.click("#ind-form button[type=submit]")
        drawn = page.locator("#ind-on li[data-indicator='rsi'][data-state='drawn']")
        await drawn.wait_for(timeout=120_000)
        candles = await page.evaluate("document.querySelector('#chart').dataset.candles")
        assert await drawn.get_attribute("data-points") == candles
        assert orange(await page.locator("#chart").screenshot()) > 100, "no overlay line drawn"
        # another timeframe: the overlay is computed again for it
        await page.select_option("#chart-tf", "4h")
        await page.click("#chart-form button")
        await page.wait_for_function(
            "document.querySelector('#chart').getAttribute('aria-label').includes(' 4h ')"
            " && document.querySelector(\"#ind-on li[data-indicator='rsi']\").dataset.points"
            " === document.querySelector('#chart').dataset.candles",
            timeout=120_000,
        )
        await drawn.wait_for(timeout=60_000)
        assert orange(await page.locator("#chart").screenshot()) > 100
        assert await page.text_content("#ind-error") == ""
        # taken off the chart, its line is gone
        await page.click("#ind-on li[data-indicator='rsi'] button[aria-label^='Remove']")
        await page.wait_for_function("!document.querySelector('#ind-on li')")
        assert orange(await page.locator("#chart").screenshot()) == 0

        # one that raises on these candles: its error in its row, the chart as it was
        await write_indicator(up, await page.evaluate("session.access_token"), "fragile", FRAGILE)
        await page.evaluate("loadIndicators()")
        await page.select_option("#ind-pick", "fragile")
        await page.click("#ind-form button[type=submit]")
        failed = page.locator("#ind-on li[data-indicator='fragile'][data-state='error']")
        await failed.wait_for(timeout=120_000)
        said = text_of(await failed.text_content())
        assert "line 5: RuntimeError: only works on 400 candles" in said
        assert "fragile" in text_of(await page.text_content("#ind-error"))
        green, red = coloured(await page.locator("#chart").screenshot())
        assert green > 20 and red > 20, "the candles went with it"


#: The path of the page's requests for the RSI overlay (seen by Playwright's own events).
SERIES = "/api/workspace/indicators/rsi/series"


#: JS: the first overlay's line as ``[[ms, value], …]`` (what the chart holds).
FIRST_LINE = "[...overlays.values()][0].series[0].data().map(p => [p.time * 1000, p.value])"


async def server_refusal(page: Page, query: str) -> tuple[int, str]:
    """The status and message the gateway answers a series request with (the page's
    own session), bypassing the page's checks."""
    got = await page.evaluate(
        """async (q) => {
          const r = await fetch('/api/workspace/indicators/rsi/series?' + q,
            {headers: {Authorization: 'Bearer ' + session.access_token}});
          return [r.status, (await r.json()).error || ''];
        }""",
        query,
    )
    return int(got[0]), str(got[1])


async def test_indicator_parameters_are_set_edited_and_follow_closing_candles(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "params@example.com", allowed="400") as page:
        asked: list[str] = []
        in_flight: list[int] = [0, 0]  # now, most at once

        def sent(url: str) -> None:
            if SERIES in url:
                asked.append(url)
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])

        def ended(url: str) -> None:
            if SERIES in url:
                in_flight[0] -= 1

        page.on("request", lambda r: sent(r.url))
        page.on("requestfinished", lambda r: ended(r.url))
        page.on("requestfailed", lambda r: ended(r.url))

        # a minute chart: its candles close while the test runs
        await page.select_option("#chart-tf", "1m")
        await page.click("#chart-form button")
        await page.wait_for_function(
            "(document.querySelector('#chart').getAttribute('aria-label') || '').includes(' 1m ')"
            " && Number(document.querySelector('#chart').dataset.candles || 0) > 100",
            timeout=120_000,
        )
        # the picked indicator's declared parameters, labelled, holding its defaults
        await page.wait_for_function(
            "[...document.querySelectorAll('#ind-pick option')].some(o => o.value === 'rsi')",
            timeout=60_000,
        )
        await page.select_option("#ind-pick", "rsi")
        period = page.locator("#ind-params").get_by_label("period", exact=True)
        assert await period.input_value() == "14"

        # not a whole number: said, marked, nothing drawn or asked
        await period.fill("2.5")
        await page.click("#ind-form button[type=submit]")
        await page.wait_for_function(
            "document.querySelector('#ind-error').textContent.includes("
            "\"'period' must be a whole number (like 14), not 2.5\")"
        )
        assert await period.get_attribute("aria-invalid") == "true"
        assert await page.locator("#ind-on li").count() == 0 and asked == []

        # the server refuses the same (and what the page cannot send) with a 400 and why
        base = "ticker=BINANCE:BTC/USDT&timeframe=1h&start=2024-03-01&end=2024-03-03&params="
        for params, why in [
            ('{"period":2.5}', "'period' must be a whole number (like 14), not 2.5"),
            ('{"period":"x"}', "'period' must be a whole number"),
            ('{"length":9}', "rsi has no parameter 'length' (it takes: period)"),
            ('{"period":[9]}', "params must be a JSON object"),
            ("period=9", "params must be a JSON object"),
        ]:
            status, error = await server_refusal(page, base + quote(params))
            assert status == 400 and why in error, (params, status, error)

        # RSI(9) drawn: TA-Lib's values over the chart's candles
        await period.fill("9")
        await page.click("#ind-form button[type=submit]")
        row = page.locator("#ind-on li[data-indicator='rsi']")
        await page.locator("#ind-on li[data-params='{\"period\":9}'][data-state='drawn']").wait_for(
            timeout=120_000
        )
        assert '"period":9' in unquote(asked[-1]) and await page.text_content("#ind-error") == ""
        assert "rsi(period=9)" in text_of(await row.text_content())
        await expect_rsi(page, 9)

        # edited in its row: an empty period is refused there; 21 is drawn again
        await page.get_by_role("button", name="Edit the parameters of rsi(period=9)").click()
        edit = row.get_by_label("period", exact=True)
        assert await edit.input_value() == "9"
        await edit.fill("")
        await row.get_by_role("button", name="Apply").click()
        await row.locator(".ind-edit-error", has_text="'period' must be a whole number").wait_for()
        await edit.fill("21")
        await row.get_by_role("button", name="Apply").click()
        drawn = page.locator("#ind-on li[data-params='{\"period\":21}'][data-state='drawn']")
        await drawn.wait_for(timeout=120_000)
        await expect_rsi(page, 21)
        # a value of the right kind that the indicator itself refuses: its message, a 400
        await page.get_by_role("button", name="Edit the parameters of rsi(period=21)").click()
        await row.get_by_label("period", exact=True).fill("1")
        await row.get_by_role("button", name="Apply").click()
        await page.locator("#ind-on li[data-state='error']").wait_for(timeout=120_000)
        assert "Bad Parameter" in text_of(await page.text_content("#ind-error"))
        await page.get_by_role("button", name="Edit the parameters of rsi(period=1)").click()
        await row.get_by_label("period", exact=True).fill("21")
        await row.get_by_role("button", name="Apply").click()
        await drawn.wait_for(timeout=120_000)

        # the open candle's ticks ask nothing; a closed candle extends the line once
        await page.wait_for_function("![...overlays.values()][0].busy")
        drawn_to = int(text_of(await drawn.get_attribute("data-last")))
        before = len(asked)
        await trade_until(
            up,
            "BTCUSDT",
            70_333.5,
            page,
            "document.querySelector('#chart-last').dataset.price === '70333.5'",
        )
        closed = (
            "Number(document.querySelector('#chart').dataset.closed || 0)"
            f" > {drawn_to} && document.querySelector(\"#ind-on li[data-indicator='rsi']\")"
            ".dataset.last === document.querySelector('#chart').dataset.closed"
        )
        await page.wait_for_function(closed, timeout=150_000)
        last = int(text_of(await drawn.get_attribute("data-last")))
        extensions = asked[before:]
        minutes = (last - drawn_to) // 60_000
        assert 1 <= len(extensions) <= minutes, (extensions, minutes)
        assert in_flight[1] == 1, in_flight
        # over the window its warm-up needs (10 periods and one), not the chart's history
        start = int(parse_qs(urlsplit(extensions[-1]).query)["start"][0])
        assert start == last + 60_000 - 211 * 60_000, (start, last)
        # the line reaches the closed candle, with the value a full computation gives
        line = await page.evaluate(FIRST_LINE)
        assert line[-1][0] == last, (line[-1], last)
        full = await page.evaluate(
            """async ([start, end]) => api('GET', '/api/workspace/indicators/rsi/series?' +
                new URLSearchParams({ticker: 'BINANCE:BTC/USDT', timeframe: '1m',
                  start: String(start), end: String(end), params: '{"period":21}'}))""",
            [await page.evaluate("chart.shown.start"), last + 60_000],
        )
        assert full["times"][-1] == last
        assert abs(full["lines"][0]["values"][-1] - line[-1][1]) < 0.05, (full, line[-1])


async def expect_rsi(page: Page, period: int) -> None:
    """The first overlay holds TA-Lib's RSI(``period``) of the lake's candles of the
    chart's range up to its last point (the candles the sandbox was given; a point added
    as a candle closed, from a shorter window, within 0.01)."""
    line = await page.evaluate(FIRST_LINE)
    candles = await page.evaluate(
        """async (end) => (await api('GET', '/api/candles?' + new URLSearchParams({
            ticker: chart.shown.ticker, timeframe: chart.shown.tf,
            start: String(chart.shown.start), end: String(end)}))).candles""",
        line[-1][0] + 60_000,
    )
    closes = np.array([c[4] for c in candles], dtype=float)
    want = talib.RSI(closes, timeperiod=period)
    assert [t for t, _ in line] == [c[0] for c in candles[period:]], (len(line), len(candles))
    assert np.allclose([v for _, v in line], want[period:], atol=0.01), "not RSI of the closes"


async def test_an_alert_made_in_its_panel_fires_and_is_shown(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "alert@example.com") as page:
        await page.fill("#alert-ticker", "BINANCE:BTC/USDT")
        await page.select_option("#alert-cond", "above")
        await page.fill("#alert-price", "81000")
        await page.click("#alert-form button")
        await page.locator("#alerts li[data-alert-id]").wait_for(timeout=60_000)
        assert "above 81,000" in text_of(await page.text_content("#alerts"))
        await trade_until(
            up,
            "BTCUSDT",
            82_000,
            page,
            "[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('81000'))",
        )
        assert "went above 81000" in text_of(await page.text_content("#toasts"))
        assert await page.locator(".msg.event").count() >= 1  # and in the chat


async def test_a_backtest_from_the_strategies_panel(browser: Browser, up: RunningPlatform) -> None:
    async with workspace(browser, up, "backtest@example.com") as page:
        await page.locator("#strategies button", has_text="sma_cross").click()
        await page.locator("#strategy-code").wait_for(timeout=60_000)
        assert "def " in text_of(await page.text_content("#strategy-code"))
        assert await page.input_value("#bt-strategy") == "sma_cross"
        await page.fill("#bt-start", "2024-01-02")
        await page.fill("#bt-end", "2024-01-09")
        await page.click("#bt-form button")
        await page.locator("#bt-result").wait_for(timeout=180_000)
        assert await page.locator("#bt-metrics tr").count() >= 3
        metrics = text_of(await page.text_content("#bt-metrics"))
        assert "sharpe" in metrics.lower(), metrics
        await page.wait_for_function(
            "Number(document.querySelector('#bt-chart').dataset.points || 0) > 10"
        )
        green_blue = await page.locator("#bt-chart").screenshot()
        line = [1 for r, _, b in pixels(green_blue, 2) if b > 180 and r < 60]
        assert line, "the equity curve was not drawn"


async def test_a_paper_orders_fill_appears_in_positions(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "orders@example.com") as page:
        await page.fill("#order-ticker", "BINANCE:BTC/USDT")
        await page.fill("#order-qty", "0.1")
        await page.click("#order-form button")
        # a market order fills at the next live price
        await trade_until(
            up,
            "BTCUSDT",
            50_000,
            page,
            "document.querySelector(\"#positions tr[data-ticker='BINANCE:BTC/USDT']\") !== null",
            timeout=120,
        )
        assert "0.1" in text_of(await page.text_content("#positions"))
        assert "buy 0.1 BINANCE:BTC/USDT" in text_of(await page.text_content("#fills"))
        # its PnL follows the market
        await trade_until(
            up,
            "BTCUSDT",
            51_000,
            page,
            "document.querySelector('.pos-pnl.up-c') !== null",
        )


async def test_the_page_reconnects_when_the_gateway_restarts(
    browser: Browser, up: RunningPlatform
) -> None:
    # the browser itself logs each refused connection while the gateway is away
    async with workspace(browser, up, "reconnect@example.com", "WebSocket connection") as page:
        await page.wait_for_function("document.querySelector('#conn').className === 'up'")
        await page.wait_for_function(  # the chart is there, following its market
            "Number(document.querySelector('#chart').dataset.candles || 0) > 100", timeout=120_000
        )
        for panel in ("#alerts li", "#strategies li", "#orders li"):  # nothing in flight
            await page.locator(panel).first.wait_for(timeout=60_000)
        gateway = next(r for r in up.supervisor.running if r.part.name == "gateway")
        gateway.proc.kill()
        gateway.proc.wait()
        await page.wait_for_function(
            "document.querySelector('#conn').className === 'down'", timeout=10_000
        )
        assert "reconnecting" in text_of(await page.text_content("#conn"))
        gateway.proc = up.supervisor._spawn(gateway.part)
        await page.wait_for_function(
            "document.querySelector('#conn').className === 'up'", timeout=60_000
        )
        # and keeps working: live prices come again
        await trade_until(
            up,
            "BTCUSDT",
            60_606.5,
            page,
            "document.querySelector('#chart-last').dataset.price === '60606.5'",
        )
