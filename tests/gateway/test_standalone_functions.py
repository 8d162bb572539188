"""The gateway's HTTP handlers as functions on their own under functions-framework: each
serves its routes (and only those) from its own process's gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.functions_host import load_function
from tests.gateway.served import gateway_settings

pytestmark = pytest.mark.integration


async def test_auth_and_chat_functions_run_on_their_own(tmp_path: Path) -> None:
    cfg = gateway_settings(tmp_path / "home")
    (auth_fn, auth_app), (chat_fn, chat_app) = (
        load_function("auth", cfg),
        load_function("chat", cfg),
    )
    auth = httpx.AsyncClient(transport=httpx.ASGITransport(auth_app), base_url="http://auth")
    chat = httpx.AsyncClient(transport=httpx.ASGITransport(chat_app), base_url="http://chat")
    try:
        r = await auth.post(
            "/api/auth/signup", json={"email": "alice@example.com", "password": "long enough pw"}
        )
        assert r.status_code == 201
        token = r.json()["access_token"]
        r = await auth.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["account"]["email"] == "alice@example.com"
        assert (await auth.post("/api/chat", json={"message": "hi"})).status_code == 404

        # the chat function, another process in the cluster, shares only the database
        r = await chat.post(
            "/api/chat",
            json={"message": "list my strategies"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200 and "sma_cross" in r.json()["reply"]
        assert (await chat.post("/api/chat", json={"message": "hi"})).status_code == 401
        assert (await chat.post("/api/auth/login", json={})).status_code == 404
    finally:
        await auth.aclose()
        await chat.aclose()
        for fn in (auth_fn, chat_fn):
            await fn.handlers.close()  # its gateway, and the agent it started
