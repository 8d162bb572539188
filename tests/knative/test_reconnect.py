"""Knative cuts every request at its Service's timeoutSeconds, a WebSocket included (the
gateway's is 300 s): the web page and ``dexorder chat`` connect again on their own and the
conversation goes on. The cut is made by a TCP proxy in front of the gateway."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from dexorder.tokens import mint_token
from launcher.chat import converse
from launcher.console import console
from tests.gateway.served import gateway_settings, serve_gateway
from tests.knative.cutting_proxy import cutting_proxy

pytestmark = pytest.mark.integration


async def test_dexorder_chat_connects_again_after_a_cut(tmp_path: Path) -> None:
    async with serve_gateway(gateway_settings(tmp_path / "home")) as s:
        cfg = s.gw.cfg
        async with cutting_proxy("127.0.0.1", cfg.gateway.port) as proxy:
            token = mint_token(s.gw.keys, cfg.gateway.local_user, "service", 3600)
            script = iter(["list my strategies", "cut", "list my strategies", None])

            async def next_line() -> str | None:
                line = next(script)
                if line == "cut":
                    assert proxy.cut() == 2  # the chat socket, both of its sides
                    line = next(script)
                return line

            with console.capture() as out:
                async with aiohttp.ClientSession() as http:
                    await converse(
                        http, f"ws://127.0.0.1:{proxy.port}/api/chat/ws", token, next_line
                    )
            assert proxy.accepted == 2  # connected once more
            assert out.get().count("sma_cross") >= 2, out.get()  # both turns answered


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (apt)")
async def test_the_web_page_connects_again_after_a_cut(tmp_path: Path) -> None:
    async with (
        serve_gateway(gateway_settings(tmp_path / "home")) as s,
        cutting_proxy("127.0.0.1", s.gw.cfg.gateway.port) as proxy,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{proxy.port}/")
            await page.fill("#email", "alice@example.com")
            await page.fill("#password", "correct horse battery")
            await page.click("#signup")
            await page.wait_for_function("ws !== null && ws.readyState === 1")

            async def ask() -> None:
                count = await page.locator(".msg.agent").count()
                await page.fill("#text", "list my strategies")
                await page.click("#send button")
                await page.locator(".msg.agent").nth(count).wait_for(timeout=60_000)

            await ask()
            assert proxy.cut() >= 2
            await page.wait_for_function(
                "[...document.querySelectorAll('.msg.status')]"
                ".some(e => e.textContent.includes('reconnecting'))"
            )
            await page.wait_for_function("ws.readyState === 1", timeout=30_000)
            await ask()
            texts = await page.locator(".msg.agent").all_text_contents()
            assert len(texts) == 2 and all("sma_cross" in t for t in texts), texts
        finally:
            await browser.close()
