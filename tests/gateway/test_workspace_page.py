"""The web workspace in headless Chromium (Debian's, driven by Playwright) against the
platform `dexorder up` runs (exchange emulator, relay, stream, lake writer, gateway,
triggers; one for the module): the chart draws candles and follows trades live, the
watchlist's prices move, an indicator of the person's workspace is drawn over the chart,
an alert made in its panel fires and is shown, a backtest from the strategies panel
shows its metrics and chart, a paper order's fill reaches the positions, the page fits
a phone, and it reconnects when the gateway restarts.
No test may leave an error in the browser's console."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from PIL import Image
from playwright.async_api import Browser, Page, async_playwright

from launcher.ephemeral import RunningPlatform, ephemeral_env, in_environment, start_platform
from tests.gateway.agent_calls import agent_session

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
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    px = [img.getpixel((x, y)) for x in range(0, img.width, 2) for y in range(0, img.height, 2)]
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
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    px = [img.getpixel((x, y)) for x in range(img.width) for y in range(img.height)]
    return sum(1 for r, g, b in px if r > 220 and 80 < g < 150 and b < 60)


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
        await page.click("#ind-form button")
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
        await page.click("#ind-on li[data-indicator='rsi'] button")
        await page.wait_for_function("!document.querySelector('#ind-on li')")
        assert orange(await page.locator("#chart").screenshot()) == 0

        # one that raises on these candles: its error in its row, the chart as it was
        await write_indicator(up, await page.evaluate("session.access_token"), "fragile", FRAGILE)
        await page.evaluate("loadIndicators()")
        await page.select_option("#ind-pick", "fragile")
        await page.click("#ind-form button")
        failed = page.locator("#ind-on li[data-indicator='fragile'][data-state='error']")
        await failed.wait_for(timeout=120_000)
        assert "line 5: RuntimeError: only works on 400 candles" in await failed.text_content()
        assert "fragile" in await page.text_content("#ind-error")
        green, red = coloured(await page.locator("#chart").screenshot())
        assert green > 20 and red > 20, "the candles went with it"


async def test_an_alert_made_in_its_panel_fires_and_is_shown(
    browser: Browser, up: RunningPlatform
) -> None:
    async with workspace(browser, up, "alert@example.com") as page:
        await page.fill("#alert-ticker", "BINANCE:BTC/USDT")
        await page.select_option("#alert-cond", "above")
        await page.fill("#alert-price", "81000")
        await page.click("#alert-form button")
        await page.locator("#alerts li[data-alert-id]").wait_for(timeout=60_000)
        assert "above 81,000" in await page.text_content("#alerts")
        await trade_until(
            up,
            "BTCUSDT",
            82_000,
            page,
            "[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('81000'))",
        )
        assert "went above 81000" in await page.text_content("#toasts")
        assert await page.locator(".msg.event").count() >= 1  # and in the chat


async def test_a_backtest_from_the_strategies_panel(browser: Browser, up: RunningPlatform) -> None:
    async with workspace(browser, up, "backtest@example.com") as page:
        await page.locator("#strategies button", has_text="sma_cross").click()
        await page.locator("#strategy-code").wait_for(timeout=60_000)
        assert "def " in await page.text_content("#strategy-code")
        assert await page.input_value("#bt-strategy") == "sma_cross"
        await page.fill("#bt-start", "2024-01-02")
        await page.fill("#bt-end", "2024-01-09")
        await page.click("#bt-form button")
        await page.locator("#bt-result").wait_for(timeout=180_000)
        assert await page.locator("#bt-metrics tr").count() >= 3
        metrics = await page.text_content("#bt-metrics")
        assert "sharpe" in metrics.lower(), metrics
        await page.wait_for_function(
            "Number(document.querySelector('#bt-chart').dataset.points || 0) > 10"
        )
        green_blue = await page.locator("#bt-chart").screenshot()
        img = Image.open(io.BytesIO(green_blue)).convert("RGB")
        line = [
            1
            for x in range(0, img.width, 2)
            for y in range(0, img.height, 2)
            if img.getpixel((x, y))[2] > 180 and img.getpixel((x, y))[0] < 60
        ]
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
        assert "0.1" in await page.text_content("#positions")
        assert "buy 0.1 BINANCE:BTC/USDT" in await page.text_content("#fills")
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
        assert "reconnecting" in await page.text_content("#conn")
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
