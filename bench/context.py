"""(f2) Bounded context: the prompt of turn 20 against turn 200 of one conversation, and
the harness's overhead per turn as the conversation grows.

One person's agent served in this process (``agent.app.start_http``, a fresh home) and
the harness with the offline model, 200 turns of one conversation (long-ish messages,
each with a decision and a ticker). The embedding service is a stand-in answering each
text with a vector made from its hash at once (the model's time is not the harness's;
off instead, the agent would retry indexing the whole log at every save). Figures, each
beside a baseline from the same run:

* the system prompt ``build_prompt`` made at turn 20 and at turn 200, in tokens
  (approximated: words and punctuation marks, ``\\w+|[^\\w\\s]``; the Anthropic SDK's
  count needs the API) and characters; baseline: what the same prompt would carry at
  turn 200 if every earlier message were kept whole;
* the harness's overhead per turn (the turn less model and tool time, as the harness
  reports it: connect, context, RAG, prompt, save), p50 of turns 1-20 and of 181-200;
  target p50 < 30 ms.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from pathlib import Path

import numpy as np
from aiohttp import web

from agent.app import start_http
from agent.person import PersonAgent
from agent.summary import DIGEST_CHARS
from bench.common import free_port, pct, row
from dexorder.config import Settings
from dexorder.contracts.chat import ServerFrame
from dexorder.embeddings import DIMENSIONS
from dexorder.tokens import token_keys
from gateway.harness.model import ChatModel, Message, ModelReply, OnText, ToolSpec
from gateway.harness.router import ModelRouter
from gateway.harness.turn import Harness

TURNS = 200
TICKERS = ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT", "BINANCE:SOL/USDT", "BINANCE:ARB/USDT"]
FILLER = "Markets were choppy and I looked at a lot of charts today without much conviction. "
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> int:
    """Approximate tokens: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def message(n: int) -> str:
    ticker = TICKERS[n % len(TICKERS)]
    return f"Turn {n}. " + FILLER * 6 + f"I decided to keep {ticker} with a stop at {1000 + n}."


class _Recording:
    """The offline model, keeping each system prompt it was given."""

    def __init__(self, model: ChatModel, prompts: list[str]) -> None:
        self.model, self.prompts = model, prompts
        self.name, self.offline = model.name, model.offline

    async def reply(
        self,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        on_text: OnText | None = None,
    ) -> ModelReply:
        self.prompts.append(system)
        return await self.model.reply(system, messages, tools, on_text)


class _Router(ModelRouter):
    def __init__(self, cfg: Settings, prompts: list[str]) -> None:
        super().__init__(cfg.gateway, None)
        self.prompts = prompts

    def choose(self, tier: str, text: str) -> ChatModel:
        return _Recording(super().choose(tier, text), self.prompts)


async def _embed(request: web.Request) -> web.Response:
    """A stand-in for the embedding service: a unit vector from each text's hash."""
    texts = (await request.json())["texts"]
    vectors = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIMENSIONS)
        vectors.append((v / np.linalg.norm(v)).tolist())
    return web.json_response({"vectors": vectors})


async def _run(home: Path) -> dict[str, float]:
    app = web.Application()
    app.router.add_post("/embed", _embed)
    embedder = web.AppRunner(app)
    await embedder.setup()
    embed_port = free_port()
    await web.TCPSite(embedder, "127.0.0.1", embed_port).start()
    cfg = Settings(home=home, embedder={"host": "127.0.0.1", "port": embed_port})
    person = PersonAgent(cfg, "bench")
    port = free_port()
    server = await start_http(person, "127.0.0.1", port)
    prompts: list[str] = []
    harness = Harness(cfg, token_keys(cfg), _Router(cfg, prompts), None)
    overhead: list[float] = []
    firsts: list[int] = []
    parts: dict[str, list[float]] = {"context_ms": [], "save_ms": [], "rag_ms": []}

    async def send(frame: ServerFrame) -> None:
        pass

    try:
        for n in range(1, TURNS + 1):
            firsts.append(len(prompts))  # this turn's first model call
            result = await harness.turn(
                user="bench",
                tier="free",
                channel="web",
                text=message(n),
                mcp_url=f"http://127.0.0.1:{port}/mcp",
                send=send,
            )
            t = result.timings
            overhead.append(t["turn_ms"] - t.get("model_ms", 0.0) - t.get("tools_ms", 0.0))
            for key, values in parts.items():
                values.append(t.get(key, 0.0))
        kept = person.memory.messages()
    finally:
        await harness.close()
        await server.stop()
        await person.memory.aclose()
        await embedder.cleanup()

    turn20, turn200 = prompts[firsts[19]], prompts[firsts[-1]]
    whole = turn200 + "".join(f"\n- {m.role}: {m.text}" for m in kept[:-2])
    out = {
        "prompt_tokens_20": tokens(turn20),
        "prompt_tokens_200": tokens(turn200),
        "prompt_chars_20": len(turn20),
        "prompt_chars_200": len(turn200),
        "unbounded_tokens_200": tokens(whole),
        "summary_cap_chars": DIGEST_CHARS,
        "overhead_p50_first20_ms": pct(overhead[:20], 50),
        "overhead_p50_last20_ms": pct(overhead[-20:], 50),
        "overhead_p99_ms": pct(overhead, 99),
        **{f"{k[:-3]}_p50_first20_ms": pct(v[:20], 50) for k, v in parts.items()},
        **{f"{k[:-3]}_p50_last20_ms": pct(v[-20:], 50) for k, v in parts.items()},
    }
    row(
        "prompt tokens at turn 20 / turn 200",
        f"{out['prompt_tokens_20']:.0f} / {out['prompt_tokens_200']:.0f}",
        f"({out['prompt_chars_20']:.0f} / {out['prompt_chars_200']:.0f} characters); every "
        f"message kept whole at turn 200: {out['unbounded_tokens_200']:.0f} tokens",
    )
    row(
        "harness overhead p50, turns 1-20 / 181-200",
        f"{out['overhead_p50_first20_ms']:.1f} / {out['overhead_p50_last20_ms']:.1f} ms",
        f"p99 of all {TURNS}: {out['overhead_p99_ms']:.1f} ms (target p50 < 30 ms)",
    )
    for part, what in (
        ("context", "the summary read again each turn"),
        ("save", "each save folds the summary"),
        ("rag", "the knowledge base off; earlier messages searched"),
    ):
        row(
            f"  of which {part} p50, turns 1-20 / 181-200",
            f"{out[f'{part}_p50_first20_ms']:.1f} / {out[f'{part}_p50_last20_ms']:.1f} ms",
            what,
        )
    return out


def main() -> dict[str, float]:
    print("(f2) bounded context: prompt size and harness overhead over 200 turns")
    with tempfile.TemporaryDirectory(prefix="dexorder-bench-context-") as tmp:
        return asyncio.run(_run(Path(tmp) / "home"))


if __name__ == "__main__":
    main()
