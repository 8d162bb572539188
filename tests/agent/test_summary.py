"""The rolling conversation summary: extractive folding, its bounds, a model's digest
in place of the extractive one, and the resource serving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.memory import ConversationMemory, MemoryRequestError
from agent.summary import (
    DIGEST_CHARS,
    LINE_CHARS,
    MAX_CHARS,
    RECENT,
    Digest,
    fold,
    key_sentences,
    render,
)
from dexorder.contracts.agent_tools import SavedMessage
from dexorder.embeddings import EmbeddingClient


def said(n: int, text: str) -> SavedMessage:
    role = "user" if n % 2 == 0 else "assistant"
    return SavedMessage(id=str(n), role=role, text=text, channel="web", time=n)


def test_key_sentences_keep_decisions_tickers_and_numbers() -> None:
    text = (
        "Hello again. The weather is nice. I decided to buy BINANCE:ETH/USDT on a dip. "
        "Set the stop at 3,100. Thanks!"
    )
    assert key_sentences(text) == (
        "I decided to buy BINANCE:ETH/USDT on a dip. Set the stop at 3,100."
    )
    assert key_sentences("Just saying hi. Nothing else.") == "Just saying hi."
    assert len(key_sentences("I will buy 1 BTC. " * 100)) == LINE_CHARS


def test_folding_keeps_the_recent_messages_and_a_bounded_digest() -> None:
    messages = [
        said(n, f"Message {n}. I will watch BINANCE:T{n % 30}/USDT. " * 3) for n in range(500)
    ]
    digest = Digest()
    sizes = []
    for n in range(1, len(messages) + 1):
        digest = fold(digest, messages[:n])
        sizes.append(len(render(digest, messages[:n])))
    assert digest.folded == 500 - RECENT
    assert sum(len(line) + 3 for line in digest.lines) <= DIGEST_CHARS
    assert len(digest.tickers) == 20 and digest.tickers[-1] == "BINANCE:T13/USDT"  # 493 % 30
    text = render(digest, messages)
    assert max(sizes) <= MAX_CHARS and sizes[-1] <= sizes[40] + 100
    earlier, recent = text.split("### Recent messages")
    assert "assistant: Message 493." in earlier and "Message 494." in recent
    assert recent.count("\n- ") == RECENT
    assert "Message 0." not in text  # folded long ago, dropped as the digest filled
    assert fold(digest, messages) is digest  # nothing new to fold


async def test_a_models_digest_takes_the_folded_ones_place(tmp_path: Path) -> None:
    memory = ConversationMemory(tmp_path, EmbeddingClient("http://127.0.0.1:9", lambda: "x"))
    try:
        for n in range(10):
            await memory.save("user" if n % 2 == 0 else "assistant", f"Message {n}. Buy 1 BTC.")
        assert "### Earlier (summarised)" in memory.summary()
        with pytest.raises(MemoryRequestError, match="upto must be 1 to 10"):
            await memory.write_summary("nope", 11)
        digest = await memory.write_summary("The person is accumulating BTC.\nNo orders.", 8)
        assert digest.by == "model" and digest.folded == 8
        text = memory.summary()
        assert "- The person is accumulating BTC." in text and "Message 3." not in text
        assert "Message 8." in text and "Message 9." in text
        for n in range(10, 14):  # later folds add to the model's digest
            await memory.save("user", f"Message {n}. Sell 1 ETH.")
        text = memory.summary()
        assert "- The person is accumulating BTC." in text and "user: Message 8." in text
    finally:
        memory.close()


async def test_the_log_is_read_once_then_only_what_was_appended(tmp_path: Path) -> None:
    memory = ConversationMemory(tmp_path, EmbeddingClient("http://127.0.0.1:9", lambda: "x"))
    try:
        for n in range(3):
            await memory.save("user", f"Message {n}.")
        assert [m.text for m in memory.messages()] == ["Message 0.", "Message 1.", "Message 2."]
        line = said(3, "Message 3.").model_dump_json()
        with memory.log_path.open("a") as f:  # written by another hand, half a line first
            f.write(line[:20])
        assert len(memory.messages()) == 3  # the half line waits
        with memory.log_path.open("a") as f:
            f.write(line[20:] + "\n")
        assert memory.messages()[-1].text == "Message 3."
        memory.log_path.write_text(line + "\n")  # replaced by a shorter log: read again
        assert [m.text for m in memory.messages()] == ["Message 3."]
    finally:
        memory.close()
