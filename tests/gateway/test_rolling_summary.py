"""Bounded context: over a 200-turn conversation through the harness, the system prompt
(what ``build_prompt`` made, as the loopback Messages API received it) of turn 200 is no
larger than that of turn 20 plus the summary's cap, and still knows what was decided."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.summary import DIGEST_CHARS, MAX_CHARS
from gateway.harness.turn import TurnResult
from tests.gateway.loopback_harness import harnessed

pytestmark = pytest.mark.integration

TICKERS = ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT", "BINANCE:SOL/USDT", "BINANCE:ARB/USDT"]
FILLER = "Markets were choppy and I looked at a lot of charts today without much conviction. "


#: turns run through the whole harness (the others are saved as its save step saves them)
MEASURED = (1, 20, 100, 199, 200)


def message(n: int) -> str:
    """A long-ish message with one decision in it, different each turn."""
    ticker = TICKERS[n % len(TICKERS)]
    return f"Turn {n}. " + FILLER * 8 + f"I decided to watch {ticker} with a stop at {1000 + n}."


async def test_the_prompt_of_turn_200_is_no_larger_than_turn_20_plus_the_cap(
    tmp_path: Path,
) -> None:
    # the context cached as usual: a saved turn makes the next read the summary again;
    # the summary stays extractive (the model's rewrite: the test below)
    async with harnessed(tmp_path, summary_model_after=1000) as h:
        harness, agent, api = h.harness, h.agent, h.api
        for n in range(1, 201):
            answer = f"Noted for turn {n}. " + FILLER
            if n not in MEASURED:  # saved as the harness's save step saves a turn
                await agent.person.memory.save("user", message(n), "web")
                await agent.person.memory.save("assistant", answer, "web")
                continue
            api.replies = [[{"type": "text", "text": answer}]]
            await h.turn(message(n))
        kept = agent.person.memory.messages()

    assert len(kept) == 400  # nothing is lost: the log keeps every message
    prompts = dict(zip(MEASURED, (r["system"] for r in api.requests), strict=True))
    turn20, turn200 = prompts[20], prompts[200]
    assert len(turn200) <= len(turn20) + DIGEST_CHARS
    # and, all along, bounded by the summary's own cap
    assert max(map(len, prompts.values())) - len(prompts[1]) <= MAX_CHARS
    assert harness.context.misses == 1  # one full read; then the summary alone, each turn
    # the last messages are there as they were; an old decision is folded, not lost yet
    assert "Turn 199." in turn200 and "Noted for turn 199." in turn200
    assert "### Earlier (summarised)" in turn200
    assert "I decided to watch BINANCE:SOL/USDT with a stop at 1190." in turn200
    assert "Tickers talked about:" in turn200 and "BINANCE:ARB/USDT" in turn200
    # and the filler of folded messages is not
    assert turn200.count(FILLER.strip()) < turn20.count(FILLER.strip()) + 3


async def test_the_model_rewrites_the_summary_after_so_many_folded_messages(
    tmp_path: Path,
) -> None:
    async with harnessed(tmp_path, summary_model_after=4) as h:
        api, memory = h.api, h.agent.person.memory

        async def turn(text: str) -> TurnResult:
            return (await h.turn(text))[0]

        for n in range(1, 4):  # 6 messages: none folded yet
            await memory.save("user", message(n), "web")
            await memory.save("assistant", f"Noted for turn {n}.", "web")
        api.replies = [[{"type": "text", "text": "Noted."}]]
        await turn(message(4))  # 8 messages, 2 folded: under 4, no rewrite
        assert len(api.requests) == 1 and memory.digest().by == "extractive"

        digest = "The person watches SOL and ARB.\nStops are set near 1,000."
        api.replies = [
            [{"type": "text", "text": "Noted again."}],
            [{"type": "text", "text": digest}],
        ]
        result = await turn(message(5))  # 10 messages, 4 folded: rewritten
        asked = api.requests[2]
        assert asked["system"].startswith("You keep the running summary")
        (question,) = asked["messages"]
        assert "Turn 1." in question["content"] and "Noted for turn 2." in question["content"]
        assert "tools" not in asked  # a summary calls no tools
        assert result.tokens > 0 and "summary_ms" in result.timings
        kept = memory.digest()
        assert kept.by == "model" and kept.folded == 4 and kept.unwritten == []
        assert kept.lines == [
            "The person watches SOL and ARB.",
            "Stops are set near 1,000.",
        ]

        api.replies = [[{"type": "text", "text": "Yes."}]]
        await turn("what do I watch?")  # the next prompt holds the model's digest
        assert "- The person watches SOL and ARB." in api.requests[3]["system"]
        assert len(api.requests) == 4  # 2 more folded since: under 4, no rewrite
