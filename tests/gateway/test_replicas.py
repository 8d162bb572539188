"""Two gateway processes sharing PostgreSQL, Redis and one home: a person's turns run one
after the other whichever replica gets them, an order asked on one is confirmed on the
other and placed once, and a replica killed mid-turn locks nobody out for longer than
the turn lease; an agent's event reaching one is delivered to the socket on the other."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
import zmq
import zmq.asyncio

from dexorder.config import Settings
from dexorder.schemas import EventAck, UserEvent, decode, encode
from dexorder.tokens import mint_token, token_keys
from tests.gateway.replicas import REDIS_URL, Replicas, serve_held_api, serve_replicas

pytestmark = pytest.mark.integration


#: a resting paper order: placed without a live price (no market data in these tests)
ORDER = {
    "ticker": "BINANCE:BTC/USDT",
    "side": "buy",
    "quantity": 0.1,
    "order_type": "limit",
    "limit_price": 1000.0,
    "mode": "paper",
}
ASK_ORDER = [{"type": "tool_use", "id": "toolu_1", "name": "execute_trade", "input": ORDER}]


def orders(r: Replicas, user: str) -> list[dict[str, Any]]:
    """The orders the person's paper account has taken."""
    path = r.agent_dir(user) / "state" / "paper.json"
    return list(dict(json.loads(path.read_text())["orders"]).values()) if path.exists() else []


def saved(r: Replicas, user: str) -> list[tuple[str, str]]:
    path = r.agent_dir(user) / "state" / "memory" / "messages.jsonl"
    return [(m["role"], m["text"]) for m in map(json.loads, path.read_text().splitlines())]


def tools_of(frames: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f["name"], f["state"]) for f in frames if f["type"] == "tool"]


async def test_an_order_asked_on_one_replica_is_confirmed_on_the_other_and_placed_once(
    tmp_path: Path,
) -> None:
    async with (
        serve_held_api() as (api_url, api),
        serve_replicas(tmp_path, anthropic_url=api_url) as r,
    ):
        alice = await r[0].client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        api.replies = [ASK_ORDER, [{"type": "text", "text": "Nothing is waiting."}]]
        async with r[0].client.socket(token) as on_a:
            frames = await on_a.ask("buy 0.1 BTC on paper")
            assert [f for f in frames if f["type"] == "confirm"], frames
            assert "Reply “yes”" in frames[-1]["text"] and not tools_of(frames)
        async with r[1].client.socket(token) as on_b:
            frames = await on_b.ask("yes")
            # B used the agent A started (one agent: the lock in the person's folder)
            assert "status" not in [f["type"] for f in frames]
            assert tools_of(frames) == [("execute_trade", "start"), ("execute_trade", "done")], (
                frames
            )
        assert [(o["side"], o["quantity"], o["limit_price"]) for o in orders(r, user)] == [
            ("buy", 0.1, 1000.0)
        ]
        async with r[0].client.socket(token) as on_a:
            frames = await on_a.ask("yes")  # answered already: nothing waits on any replica
            assert not [t for t in tools_of(frames) if t[0] == "execute_trade"]
            assert frames[-1]["text"] == "Nothing is waiting."
        assert len(orders(r, user)) == 1
        # what was said, once each, in order, whichever replica heard it
        assert [role for role, _ in saved(r, user)] == ["user", "assistant"] * 3
        assert [text for role, text in saved(r, user) if role == "user"] == [
            "buy 0.1 BTC on paper",
            "yes",
            "yes",
        ]


async def _requests_counted(user: str, n: int) -> None:
    """Wait until ``n`` chat requests of ``user`` have passed the rate limit (in Redis):
    each is then at the turn lease or past it."""
    client = redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(60):
            while True:
                keys = await client.keys(f"*limits:rate:{user}:*")
                counted = sum(int(v or 0) for v in await client.mget(keys)) if keys else 0
                if counted >= n:
                    return
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_two_messages_at_once_on_two_replicas_run_one_after_the_other(
    tmp_path: Path,
) -> None:
    async with (
        serve_held_api() as (api_url, api),
        serve_replicas(tmp_path, anthropic_url=api_url) as r,
    ):
        alice = await r[0].client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        api.replies = [
            [{"type": "text", "text": "First answer."}],
            [{"type": "text", "text": "Second answer."}],
        ]
        api.hold()
        sent = [
            asyncio.create_task(r[i].client.post("/api/chat", {"message": m}, token=token))
            for i, m in ((0, "first question"), (1, "second question"))
        ]
        try:
            await api.wait_arrivals(1)  # one turn is at its model call, held there
            await _requests_counted(user, 2)  # and the other one has arrived too
            # were the lease not shared, the other turn would reach the model meanwhile
            with pytest.raises(TimeoutError):
                await api.wait_arrivals(2, timeout=3)
        finally:
            api.release()
        answers = await asyncio.gather(*sent)
        assert [status for status, _ in answers] == [200, 200], answers
        assert api.most_in_flight == 1
        (first_in, first_out), (second_in, _) = api.spans
        assert second_in >= first_out > first_in
        # the conversation is whole: each question straight before its answer
        said = saved(r, user)
        assert [role for role, _ in said] == ["user", "assistant", "user", "assistant"]
        # the model answers in the order the turns reach it, whichever question that was
        assert (said[1][1], said[3][1]) == ("First answer.", "Second answer.")
        assert {said[0][1], said[2][1]} == {"first question", "second question"}


async def test_a_replica_killed_mid_turn_locks_the_person_out_only_until_the_lease_ends(
    tmp_path: Path,
) -> None:
    lease_s = 5.0  # renewed every 1.7 s: not lost to a loaded machine while A lives
    async with (
        serve_held_api() as (api_url, api),
        serve_replicas(tmp_path, lease_s=lease_s, anthropic_url=api_url) as r,
    ):
        alice = await r[0].client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        api.replies = [ASK_ORDER]
        status, body = await r[0].client.post("/api/chat", {"message": "buy 0.1 BTC"}, token=token)
        assert status == 200 and "Please confirm" in body["reply"], body
        status, body = await r[0].client.post("/api/chat", {"message": "yes"}, token=token)
        assert status == 200 and len(orders(r, user)) == 1, body

        # A is in the middle of a turn (held at its model call) and dies there
        api.hold()
        on_a = asyncio.create_task(
            r[0].client.post("/api/chat", {"message": "what now?"}, token=token)
        )
        try:
            await api.wait_arrivals(2)
        except BaseException:
            api.release()
            raise
        r[0].kill()
        with pytest.raises(Exception):  # noqa: B017 - the connection just ends
            await on_a
        # the dead replica's hold on alice's turn is still there, bounded by its lease
        client = redis.from_url(REDIS_URL)
        try:
            ttl_ms = await client.pttl(f"{r.redis_prefix}lease:turn:{user}")
        finally:
            await client.aclose()
        assert 0 < ttl_ms <= lease_s * 1000
        # the held request may still take an answer meant for nobody: one each
        api.replies = [[{"type": "text", "text": "Answered after the crash."}]] * 2
        api.release()

        # B: the person's next message waits out A's lease, then runs (a fresh agent:
        # A's died with it); the order placed before is not placed again
        t0 = time.monotonic()
        status, body = await r[1].client.post("/api/chat", {"message": "yes"}, token=token)
        assert status == 200, body
        assert body["reply"] == "Answered after the crash."
        assert time.monotonic() - t0 < lease_s + 60
        assert len(orders(r, user)) == 1
        assert not [p for p in body["progress"] if p.get("name") == "execute_trade"]


async def test_an_event_reaching_one_replica_is_delivered_to_the_socket_on_the_other(
    tmp_path: Path,
) -> None:
    async with serve_replicas(tmp_path) as r:
        alice = await r[0].client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        keys = token_keys(Settings(home=r.home))  # the replicas' shared key
        event = UserEvent(
            event_id="fill-across-1",
            user=user,
            kind="fill",
            critical=True,
            payload={"side": "buy", "quantity": 0.1, "ticker": "BINANCE:BTC/USDT", "price": 1.0},
            auth=mint_token(keys, user),
        )
        dealer = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{r[0].events_port}")  # as her agent reaches A
        try:
            async with r[1].client.socket(token) as on_b:  # her page is open on B
                await dealer.send(encode(event))
                shown = await on_b.until("event", timeout=30)
                assert (shown["event_id"], shown["kind"]) == ("fill-across-1", "fill")
                assert await dealer.poll(30_000), "A never acknowledged the event"
                ack = decode(await dealer.recv())
                assert isinstance(ack, EventAck) and ack.event_id == "fill-across-1"
                # the agent sends it again (its ack lost): acknowledged, not shown twice
                await dealer.send(encode(event))
                assert await dealer.poll(30_000)
                assert isinstance(decode(await dealer.recv()), EventAck)
                again = await on_b.ask("hello")
                assert not [f for f in again if f["type"] == "event"], again
        finally:
            dealer.close()


def watchlist(r: Replicas, user: str) -> list[str]:
    """The person's watchlist as their agent keeps it (empty: never set)."""
    found = list(r.agent_dir(user).rglob("watchlist.json"))
    return list(json.loads(found[0].read_text())) if found else []


async def _lease_gone(key: str) -> None:
    """Wait until ``key`` is no longer in Redis (its lease ran out unrenewed)."""
    client = redis.from_url(REDIS_URL)
    try:
        async with asyncio.timeout(60):
            while await client.exists(key):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_a_replica_stalled_past_its_lease_does_nothing_more_when_it_runs_again(
    tmp_path: Path,
) -> None:
    lease_s = 5.0
    async with (
        serve_held_api() as (api_url, api),
        serve_replicas(tmp_path, lease_s=lease_s, anthropic_url=api_url) as r,
    ):
        a, b = r[0], r[1]
        alice = await a.client.sign_up("alice@example.com")
        user, token = alice["account"]["id"], alice["access_token"]
        api.replies = [[{"type": "text", "text": "Hello."}]]
        status, body = await a.client.post("/api/chat", {"message": "hi"}, token=token)
        assert status == 200 and body["reply"] == "Hello.", body

        # A's turn is at its model call when A stalls (SIGSTOP) past its lease
        api.hold()
        api.replies = [
            # what A's model call gets, too late: a change to the person's agent
            [
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "set_watchlist",
                    "input": {"tickers": ["BINANCE:BTC/USDT"]},
                }
            ],
            # B's turn, meanwhile
            [
                {
                    "type": "tool_use",
                    "id": "t2",
                    "name": "set_watchlist",
                    "input": {"tickers": ["BINANCE:ETH/USDT"]},
                }
            ],
            [{"type": "text", "text": "Watching ETH."}],
        ]
        on_a = asyncio.create_task(
            a.client.post("/api/chat", {"message": "watch BTC"}, token=token)
        )
        try:
            await api.wait_arrivals(2)
            a.stop()
            await _lease_gone(f"{r.redis_prefix}lease:turn:{user}")
        finally:
            api.release()  # A's answer waits in its socket while it is stopped
        try:
            # the person, on B, is answered; the agent B reaches is the one A started
            status, body = await b.client.post("/api/chat", {"message": "watch ETH"}, token=token)
            assert status == 200 and body["reply"] == "Watching ETH.", body
            assert watchlist(r, user) == ["BINANCE:ETH/USDT"]
        finally:
            a.cont()
        # A runs again, with its model's answer there to act on: it acts on nothing
        status, body = await on_a
        assert status == 503 and "interrupted" in body["error"], body
        assert watchlist(r, user) == ["BINANCE:ETH/USDT"]  # A's change never went out
        asked = [str(q["messages"][-1]["content"])[:80] for q in api.requests]
        assert len(asked) == 4, (asked, a.log.read_text()[-4000:])  # A asked nothing more
        assert saved(r, user) == [
            ("user", "hi"),
            ("assistant", "Hello."),
            ("user", "watch ETH"),
            ("assistant", "Watching ETH."),
        ]
        assert "lease lost" in a.log.read_text()
