"""``make eval``: 30 plain requests, each with the tool calls it should lead to, scored.

Runs whole turns through the harness against a real agent (its sandbox, and a lake of
hourly BTC candles for January 2024) on a fresh home: Claude when ``ANTHROPIC_API_KEY`` is
set (the router's choice for the free tier), the offline model otherwise. A request
passes when the tools it should call were called in that order (others may run between:
a skill's own calls, a price looked up first). An order the model asks for counts as
``execute_trade`` (held for the person's "yes", never placed). Prints a score table.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.app import start_http
from agent.person import PersonAgent
from dexorder.config import Settings
from dexorder.contracts.chat import ConfirmFrame, ServerFrame, ToolFrame
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.schemas import OhlcBatch
from dexorder.tokens import token_keys
from gateway.harness.router import ModelRouter
from gateway.harness.turn import Harness
from launcher.ephemeral import free_port
from services.exchange_emulator.simulator import DEFAULT_SYMBOLS, MarketSimulator
from streaming.lake_rows import PendingBatch
from streaming.lake_writer import commit_batch

JAN = "from 2024-01-02 to 2024-01-20"
HOUR = 3_600_000
D0 = 1_704_067_200_000  # 2024-01-01

#: (request, the tools it should call, in order)
CASES: list[tuple[str, list[str]]] = [
    ("price of BTC", ["get_price"]),
    ("how much is ETH trading at?", ["get_price"]),
    ("price of SOL", ["get_price"]),
    ("list my strategies", ["list_strategies"]),
    ("which indicators do I have?", ["list_indicators"]),
    ("show my positions", ["get_positions"]),
    ("what is in my portfolio?", ["get_positions"]),
    ("what alerts do I have?", ["list_alerts"]),
    ("show my watchlist", ["get_watchlist"]),
    ("show the strategy sma_cross", ["read_strategy"]),
    ("read the indicator rsi", ["read_indicator"]),
    (f"backtest sma_cross on 1h {JAN}", ["run_backtest"]),
    ("backtest rsi_reversion on 1h from 2024-01-02 to 2024-01-15", ["run_backtest"]),
    ("candles of BTC on 1h from 2024-01-02 to 2024-01-05", ["get_candles"]),
    ("set an alert at 70k on BTC", ["set_alert"]),
    ("alert me when ETH drops below 2,000", ["set_alert"]),
    ("buy 0.01 BTC on paper", ["execute_trade"]),
    (f"explain the backtest of sma_cross {JAN}", ["skill_explain_backtest", "run_backtest"]),
    (
        "explain the backtest of rsi_reversion from 2024-01-02 to 2024-01-15",
        ["skill_explain_backtest", "run_backtest"],
    ),
    ("review my positions' risk", ["skill_review_risk", "get_positions"]),
    ("what's the risk exposure of my portfolio?", ["skill_review_risk", "get_positions"]),
    ("summarise the market for my watchlist", ["skill_market_summary", "get_watchlist"]),
    ("give me an overview of the markets on my watchlist", ["skill_market_summary"]),
    ("analyse my watchlist", ["agent_market_analyst", "get_watchlist"]),
    (
        f"write a strategy called rsi_dip that buys when RSI is under 30, backtest {JAN}",
        ["agent_strategy_author", "write_strategy", "run_backtest"],
    ),
    (
        "write a strategy called ema_trend, long while the fast EMA is above the slow EMA, "
        f"backtest {JAN}",
        ["agent_strategy_author", "write_strategy", "run_backtest"],
    ),
    ("write an indicator called my_atr (ATR)", ["workflow_write_indicator", "write_indicator"]),
    ("write an indicator called fast_ema: an EMA of 10", ["workflow_write_indicator"]),
    (f"sweep sma_cross {JAN}", ["workflow_sweep", "run_backtest"]),
    (f"optimise rsi_reversion by sortino {JAN}", ["workflow_sweep", "run_backtest"]),
]


@dataclass
class Scored:
    request: str
    expected: list[str]
    called: list[str]
    ms: float

    @property
    def passed(self) -> bool:
        """``expected`` is a subsequence of ``called``."""
        rest = iter(self.called)
        return all(any(c == e for c in rest) for e in self.expected)


def fill_lake(cfg: Settings, days: int = 21) -> None:
    """Hourly BTC candles of the exchange emulator's market, from 2024-01-01."""
    rows = MarketSimulator(seed=42).klines(DEFAULT_SYMBOLS[0], HOUR, D0, D0 + days * 24 * HOUR)
    batch = PendingBatch()
    batch.add_ohlc(
        OhlcBatch(
            request_id="eval",
            ticker="BINANCE:BTC/USDT",
            timeframe="1h",
            rows=[
                (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), 1)
                for r in rows
            ],
        )
    )
    commit_batch(ohlc_table(open_catalog(cfg)), batch)


async def evaluate(home: Path, api_key: str | None) -> list[Scored]:
    cfg = Settings(home=home, embedder={"enabled": False})
    fill_lake(cfg)
    person = PersonAgent(cfg, "eval")
    person.documents.set_watchlist([])  # the summaries read the lake only: no exchange
    port = free_port()
    server = await start_http(person, "127.0.0.1", port)
    harness = Harness(cfg, token_keys(cfg), ModelRouter(cfg.gateway, api_key), None)
    scored: list[Scored] = []
    try:
        for request, expected in CASES:
            called: list[str] = []

            async def send(frame: ServerFrame, called: list[str] = called) -> None:
                if isinstance(frame, ToolFrame) and frame.state == "start":
                    called.append(frame.name)
                elif isinstance(frame, ConfirmFrame):
                    called.append("execute_trade")

            t0 = time.perf_counter()
            await harness.turn(
                user="eval",
                tier="free",
                channel="web",
                text=request,
                mcp_url=f"http://127.0.0.1:{port}/mcp",
                send=send,
            )
            scored.append(Scored(request, expected, called, (time.perf_counter() - t0) * 1000))
            if await harness.pending_order("eval") is not None:
                await harness.forget("eval")  # the order is not confirmed: the next starts afresh
    finally:
        await harness.close()
        await server.stop()
    return scored


def table(scored: list[Scored], model: str) -> str:
    width = 58
    lines = [
        f"eval: {len(scored)} plain requests, model: {model}",
        f"{'#':>2}  {'request':<{width}}  {'ok':<2}  {'ms':>7}  expected → called",
    ]
    for i, s in enumerate(scored, 1):
        shown = s.request if len(s.request) <= width else s.request[: width - 1] + "…"
        lines.append(
            f"{i:>2}  {shown:<{width}}  {'✓' if s.passed else '✗':<2}  {s.ms:>7.0f}  "
            f"{' '.join(s.expected)} → {' '.join(s.called) or '(none)'}"
        )
    passed = sum(s.passed for s in scored)
    lines.append(f"score: {passed}/{len(scored)} ({passed / len(scored):.0%})")
    return "\n".join(lines)


def main() -> int:
    api_key = os.environ.get("ANTHROPIC_API_KEY") or None
    with tempfile.TemporaryDirectory() as tmp:
        scored = asyncio.run(evaluate(Path(tmp) / "home", api_key))
    print(table(scored, "Claude (free tier's models)" if api_key else "offline"))
    return 0 if all(s.passed for s in scored) or api_key else 1


if __name__ == "__main__":
    sys.exit(main())
