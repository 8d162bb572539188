"""Subagent: the market analyst — the watchlist's candles, indicators and alerts → a short
analysis, the candles charted for the person.

    START ─ gather ─ analyse ─ END

``gather`` fetches what every analysis needs (watchlist, alerts, each market's candles:
their charts go to the person as they come); ``analyse`` runs the model scoped to market
tools only, with its own budget. Offline, the analysis is the extractive summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from dexorder.contracts.chat import JsonObject
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.reports import Report
from gateway.harness.skills import market_summary
from gateway.harness.skills.registry import Gathered
from gateway.harness.subagents.loop import Delegation, Scope, call_in, run_scoped

NAME = "market_analyst"
SCOPE = Scope(
    "the market analyst",
    frozenset(
        {
            "get_watchlist",
            "list_alerts",
            "get_candles",
            "get_price",
            "list_indicators",
            "read_indicator",
        }
    ),
    max_rounds=5,
    max_tokens=50_000,
)
PROMPT = (
    "You are a market analyst for one trader. From their watchlist's candles and alerts "
    "(given), and more candles or prices if you need them, write a short analysis: trend, "
    "range, momentum, what stands out, how close their alerts are. No advice to trade; "
    "at most 150 words. You can only look at markets: you cannot write files or trade."
)


class Ask(BaseModel):
    request: str = Field("How do the markets of my watchlist look?", max_length=4000)
    timeframe: str = Field("1h", description="1m 5m 15m 1h 4h 1d")
    days: int = Field(7, ge=1, le=90)
    end: str | None = Field(None, description="YYYY-MM-DD; default now")


class MarketAnalysis(Report):
    tickers: list[str]
    analysis: str
    rounds: int
    stopped: str | None = None

    def text(self) -> str:
        return self.analysis if not self.stopped else f"{self.analysis}\n({self.stopped})"


class AnalystState(TypedDict, total=False):
    gathered: Gathered
    result: MarketAnalysis


@dataclass
class _Deps:
    d: Delegation
    ask: Ask


async def _gather(state: AnalystState, runtime: Runtime[_Deps]) -> AnalystState:
    w = runtime.context

    async def call(tool: str, args: JsonObject) -> ToolOutcome:
        return await call_in(w.d, SCOPE, tool, args)

    summary_ask = market_summary.Ask(timeframe=w.ask.timeframe, days=w.ask.days, end=w.ask.end)
    return {"gathered": await market_summary.gather(summary_ask, call)}


async def _analyse(state: AnalystState, runtime: Runtime[_Deps]) -> AnalystState:
    w, gathered = runtime.context, state["gathered"]
    summary_ask = market_summary.Ask(timeframe=w.ask.timeframe, days=w.ask.days, end=w.ask.end)
    summary = market_summary.offline(summary_ask, gathered)
    tickers = [t.ticker for t in summary.tickers]
    if w.d.model.offline:
        return {"result": MarketAnalysis(tickers=tickers, analysis=summary.text(), rounds=0)}
    found = "\n\n".join(f"### {tool}\n{o.as_text()[:8000]}" for tool, o in gathered)
    request = f"{w.ask.request}\n\nWhat was gathered:\n\n{found}"
    done = await run_scoped(w.d, SCOPE, PROMPT, request)
    return {
        "result": MarketAnalysis(
            tickers=tickers,
            analysis=done.text or summary.text(),
            rounds=done.rounds,
            stopped=done.stopped,
        )
    }


def _build() -> Any:
    g = StateGraph(AnalystState, context_schema=_Deps)
    g.add_node("gather", _gather)
    g.add_node("analyse", _analyse)
    g.add_edge(START, "gather")
    g.add_edge("gather", "analyse")
    g.add_edge("analyse", END)
    return g.compile()


_GRAPH = _build()


async def analyse(d: Delegation, ask: Ask) -> MarketAnalysis:
    state: AnalystState = await _GRAPH.ainvoke({}, context=_Deps(d, ask))
    return state["result"]
