"""A provider's bad minute, against the loopback Messages API and the official SDK: a
529 is retried, a persistent one falls back to the tier's fallback model, a 429's
retry-after is waited out, and a budget used up between tool rounds ends the turn
politely with what was done."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dexorder.config import Settings
from gateway.harness.model import ModelReply
from gateway.harness.router import Meter, ModelRouter
from gateway.harness.turn import Harness, TurnResult
from gateway.limits import Limits, MemoryCounter, tier_limits
from tests.agent.conftest import Agent
from tests.gateway.loopback_anthropic import MessagesApi
from tests.gateway.loopback_harness import harnessed, run_turn

pytestmark = pytest.mark.integration

ANSWER = [{"type": "text", "text": "BTC is at 67,000 on the emulator."}]


def _tool(call_id: str, name: str) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": call_id, "name": name, "input": {}}]


def _output_tokens(reply: list[dict[str, Any]]) -> int:
    """What the loopback server reports a scripted reply used (its usage formula)."""
    return 10 + len(json.dumps(reply)) // 8


Setup = tuple[Harness, Agent, MessagesApi, Settings]


@pytest.fixture
async def setup(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    extra: dict[str, Any] = getattr(request, "param", {})
    async with harnessed(tmp_path, model_retries=1, **extra) as h:
        yield h.harness, h.agent, h.api, h.cfg


async def run(
    setup: Setup, text: str, meter: Meter | None = None
) -> tuple[TurnResult, list[dict[str, Any]]]:
    harness, agent, _, _ = setup
    return await run_turn(harness, agent, text, meter)


def streamed(sent: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in sent if f["type"] == "token")


def test_the_fallback_is_the_tiers_first_model_that_is_not_the_one_chosen() -> None:
    router = ModelRouter(Settings().gateway, None)
    simple, hard = router.route("pro", "hi"), router.route("pro", "write a strategy that")
    assert (simple.model, simple.fallback) == ("claude-haiku-4-5", "claude-sonnet-4-6")
    assert (hard.model, hard.fallback) == ("claude-sonnet-4-6", "claude-haiku-4-5")
    assert router.route("nosuchtier", "hi").fallback is None
    with pytest.raises(ValueError, match="model_prices lacks claude-x"):
        Settings(gateway={"fallback_models": {"free": ["claude-x"]}})


async def test_an_overloaded_model_is_retried_and_the_person_sees_one_answer(
    setup: Setup,
) -> None:
    _, _, api, _ = setup
    api.replies = [(529, "overloaded_error"), ANSWER]
    result, sent = await run(setup, "price of BTC?")

    assert [r["model"] for r in api.requests] == ["claude-haiku-4-5"] * 2
    assert result.reply == ANSWER[0]["text"] == streamed(sent)
    assert result.model == "claude-haiku-4-5" and result.timings["model_retries"] == 1
    assert result.why == "tier=free complexity=simple strategy=balanced"
    assert result.cost_usd > 0


async def test_a_persistent_529_falls_back_to_the_tiers_fallback_model(setup: Setup) -> None:
    _, _, api, cfg = setup
    # model_retries=1: the SDK asks twice, then the fallback answers
    api.replies = [(529, "overloaded_error"), (529, "overloaded_error"), ANSWER]
    result, sent = await run(setup, "price of BTC?")

    fallback = cfg.gateway.fallback_models["free"][0]
    assert fallback != "claude-haiku-4-5"
    assert [r["model"] for r in api.requests] == ["claude-haiku-4-5"] * 2 + [fallback]
    assert result.model == fallback and result.reply == streamed(sent) == ANSWER[0]["text"]
    assert f"fallback {fallback} after claude-haiku-4-5 was turned away 2 times" in result.why
    assert result.timings["model_retries"] == 2
    # priced as the fallback model it was (its output alone costs this much)
    price = cfg.gateway.model_prices[fallback]
    assert result.cost_usd > _output_tokens(ANSWER) * price.output / 1e6


async def test_a_fallback_that_fails_too_is_told_not_raised(setup: Setup) -> None:
    _, _, api, _ = setup
    api.replies = [(529, "overloaded_error")] * 4
    result, sent = await run(setup, "price of BTC?")
    assert len(api.requests) == 4  # two tries of each model, no more
    assert result.reply.startswith("Sorry, I could not answer") and "529" in result.reply
    assert streamed(sent) == result.reply


async def test_an_overloaded_error_inside_a_begun_stream_falls_back_at_once(
    setup: Setup,
) -> None:
    _, _, api, cfg = setup
    api.replies = [("stream", "overloaded_error"), ANSWER]
    result, sent = await run(setup, "price of BTC?")

    fallback = cfg.gateway.fallback_models["free"][0]
    # the SDK does not retry a stream that began: the fallback answers
    assert [r["model"] for r in api.requests] == ["claude-haiku-4-5", fallback]
    assert result.model == fallback and streamed(sent) == result.reply == ANSWER[0]["text"]


async def test_a_429s_retry_after_is_waited_out(setup: Setup) -> None:
    _, _, api, _ = setup
    api.replies = [(429, "rate_limit_error", {"retry-after": "1.5"}), ANSWER]
    result, _ = await run(setup, "price of BTC?")

    assert result.reply == ANSWER[0]["text"] and result.model == "claude-haiku-4-5"
    first, second = api.times
    assert second - first >= 1.5  # as the server saw the requests arrive


async def test_a_retry_after_longer_than_a_turn_waits_falls_back_at_once(setup: Setup) -> None:
    _, _, api, cfg = setup
    # an hour: the SDK alone would sleep it out while the person watches the turn
    api.replies = [(429, "rate_limit_error", {"retry-after": "3600"}), ANSWER]
    result, sent = await run(setup, "price of BTC?")

    fallback = cfg.gateway.fallback_models["free"][0]
    assert [r["model"] for r in api.requests] == ["claude-haiku-4-5", fallback]
    assert result.model == fallback and streamed(sent) == result.reply == ANSWER[0]["text"]


async def test_a_long_retry_after_on_the_last_try_is_told_as_the_apis_refusal(
    setup: Setup,
) -> None:
    _, _, api, _ = setup
    # the first try's short wait is honoured; on the last try the SDK would not wait, so
    # the 429 itself is what the fallback decision sees
    api.replies = [
        (429, "rate_limit_error", {"retry-after-ms": "10"}),
        (429, "rate_limit_error", {"retry-after": "3600"}),
        ANSWER,
    ]
    result, _ = await run(setup, "price of BTC?")
    assert [r["model"] for r in api.requests][:2] == ["claude-haiku-4-5"] * 2
    assert result.reply == ANSWER[0]["text"] and result.model != "claude-haiku-4-5"


async def test_a_request_the_api_refuses_is_not_retried_nor_falls_back(setup: Setup) -> None:
    _, _, api, _ = setup
    api.replies = [(400, "invalid_request_error"), ANSWER]
    result, _ = await run(setup, "price of BTC?")
    assert len(api.requests) == 1 and "400" in result.reply


FIRST, SECOND = _tool("toolu_01", "list_strategies"), _tool("toolu_000002", "list_alerts")


@pytest.mark.parametrize(
    "setup",
    [
        {
            # each tool round costs US$0.60 of a US$1 budget: the second uses it up
            "model_prices": {
                m: {"input": 0.0, "output": 0.6e6 / _output_tokens(FIRST)}
                for m in (
                    "claude-haiku-4-5",
                    "claude-sonnet-4-6",
                    "claude-opus-4-6",
                    "claude-opus-4-7",
                )
            },
            "monthly_budget_usd": {"free": 1.0},
        }
    ],
    indirect=True,
)
async def test_a_budget_used_up_between_tool_rounds_ends_the_turn_politely(
    setup: Setup,
) -> None:
    _, agent, api, cfg = setup
    assert _output_tokens(FIRST) == _output_tokens(SECOND)
    limits = Limits(MemoryCounter(), tier_limits(cfg.gateway.monthly_budget_usd))
    charged: list[ModelReply] = []

    async def meter(reply: ModelReply) -> str | None:
        charged.append(reply)
        return await limits.charge(agent.person.user, "free", reply.tokens, reply.cost_usd)

    api.replies = [FIRST, SECOND, ANSWER]
    result, sent = await run(setup, "what do I have?", meter)

    assert len(api.requests) == 2 and len(charged) == 2  # no third round
    assert [(f["name"], f["state"]) for f in sent if f["type"] == "tool"] == [
        ("list_strategies", "start"),
        ("list_strategies", "done"),
    ]  # list_alerts, asked for after the budget ran out, did not run
    assert "I have to stop here (monthly model budget of US$1.00 used up" in result.reply
    assert "Done so far: list_strategies." in result.reply
    assert result.reply == streamed(sent)
    assert await limits.spent_usd(agent.person.user) == pytest.approx(1.2)
    assert not (await limits.budget(agent.person.user, "free")).allowed
    # the turn was saved as usual: the next one knows how this one ended
    saved = [m.text for m in agent.person.memory.messages()]
    assert saved[-2:] == ["what do I have?", result.reply]
