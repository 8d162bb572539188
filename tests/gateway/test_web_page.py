"""The web chat page in headless Chromium (Debian's, driven by Playwright): sign up, a
streamed reply, the agent's candles in the chart panel, a backtest chart inline, an
alert arriving live."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

from tests.agent.conftest import fill_lake
from tests.gateway.page_reading import pixels, text_of
from tests.gateway.served import Served, alert_event, gateway_settings, serve_gateway
from tests.gateway.test_isolation import send_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (apt)"),
]


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[tuple[Served, Page]]:
    cfg = gateway_settings(tmp_path / "home")
    fill_lake(cfg, days=10)
    async with serve_gateway(cfg) as s, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            p = await browser.new_page(viewport={"width": 1000, "height": 900})
            await p.goto(s.url + "/")
            yield s, p
        finally:
            await browser.close()


async def ask(page: Page, text: str) -> None:
    count = await page.locator(".msg.agent").count()
    await page.fill("#text", text)
    await page.click("#send button")
    await page.locator(".msg.agent").nth(count).wait_for(timeout=60_000)


async def test_the_page_chats_and_draws_charts(page: tuple[Served, Page], tmp_path: Path) -> None:
    s, p = page
    await p.fill("#email", "short")
    await p.fill("#password", "correct horse battery")
    await p.click("#signup")  # the browser's own check stops a bad email; ours the rest
    await p.fill("#email", "alice@example.com")
    await p.fill("#password", "short-pw")
    await p.click("#signup")
    await p.wait_for_function("document.querySelector('#auth-error').textContent.length > 0")
    assert "at least 10" in text_of(await p.text_content("#auth-error"))
    await p.fill("#password", "correct horse battery")
    await p.click("#signup")
    await p.wait_for_function("document.querySelector('#who').textContent === 'alice@example.com'")
    # signed up: the form is gone and the chat is there (the form's grid once outranked .hidden)
    assert not await p.locator("#auth").is_visible()
    assert await p.locator("#text").is_visible()

    await ask(p, "list my strategies")
    await p.wait_for_function(
        "[...document.querySelectorAll('.msg.agent')]"
        ".some(e => e.textContent.includes('sma_cross'))"
    )
    assert await p.locator(".msg.tool").count() >= 1  # tool progress shown

    await ask(p, "candles of BTC on 1h from 2024-01-01 to 2024-01-05")
    # the chart panel follows the agent's candles
    await p.wait_for_function("document.querySelector('#chart').dataset.candles === '96'")
    shot = await p.locator("#chart").screenshot()
    colours = set(pixels(shot, 2))
    green = [c for c in colours if c[1] > 140 and c[0] < 90]  # rising candles (#26a69a)
    red = [c for c in colours if c[0] > 200 and c[1] < 110]  # falling candles (#ef5350)
    assert green and red, "the candle chart drew no candles"
    (tmp_path / "candles.png").write_bytes(shot)

    await ask(p, "backtest sma_cross on 1h from 2024-01-02 to 2024-01-09")
    img = p.locator("img.chart")
    await img.wait_for(timeout=120_000)
    assert await img.evaluate("i => i.complete && i.naturalWidth > 300")

    user = (await s.get("/api/me", token=await p.evaluate("session.access_token")))[1]["account"][
        "id"
    ]
    event = alert_event(
        s.gw,
        user,
        "page-1",
        ticker="BINANCE:BTC/USDT",
        condition="above",
        price=70000,
        triggered_price=70001,
    )
    await send_event(s.gw.events.endpoint, event)
    await p.locator(".msg.event").wait_for(timeout=30_000)
    assert "went above 70000" in text_of(await p.text_content(".msg.event"))
