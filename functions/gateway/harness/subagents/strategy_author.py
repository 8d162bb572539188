"""Subagent: the strategy author — plans, writes, validates, backtests, reports.

    START ─ gather ─ plan ─ write ─ backtest ─ report ─ END
                              └─ (not saved) ──────── report

``gather`` reads what it writes against: the person's strategies and indicators, the
SDK's documented interfaces, their earlier backtests (the agent keeps each run: those of
the strategy being changed, else their latest, with the figures a new one is judged
beside) and earlier talk of backtests (what the person made of them). ``plan`` has the model outline
the rules; ``write`` is the write → validate → fix workflow; ``backtest`` runs the saved
strategy (its chart goes to the person); ``report`` has the model say how it did. Its
tools are its allowlist (no trading, no alerts) and its budget its own: at most
``SCOPE.max_rounds`` model calls (the write loop's included) and ``SCOPE.max_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from dexorder.contracts.agent_tools import BacktestList, BacktestRun, Figure
from dexorder.contracts.chat import JsonObject
from gateway.harness.model import UserMessage
from gateway.harness.reports import Report
from gateway.harness.subagents.loop import Delegation, Scope, call_in
from gateway.harness.workflows import templates, write_code

NAME = "strategy_author"
SCOPE = Scope(
    "the strategy author",
    frozenset(
        {
            "list_strategies",
            "read_strategy",
            "write_strategy",
            "list_indicators",
            "read_indicator",
            "run_backtest",
            "list_backtests",
            "search_conversation",
        }
    ),
    max_rounds=6,
    max_tokens=120_000,
)
#: Earlier runs put in the author's context.
EARLIER_RUNS = 5
PROMPT = (
    "You are a strategy author for one trader: you turn their idea into a strategy file of "
    "DexOrder's Python SDK, then judge its backtest honestly (few trades, one period and "
    "one market prove little).\n\n{sdk}\n\n{context}"
)


class Ask(BaseModel):
    name: str = Field(description="file name without .py", pattern=r"^[a-z_][a-z0-9_]*$")
    request: str = Field(description="the strategy's idea, in the person's words")
    ticker: str = "BINANCE:BTC/USDT"
    timeframe: str = "1h"
    start: str | None = Field(None, description="YYYY-MM-DD; default 30 days ago")
    end: str | None = Field(None, description="YYYY-MM-DD; default now")


class AuthoredStrategy(Report):
    name: str
    plan: str
    written: write_code.WrittenFile
    figures: dict[str, Figure] = {}
    chart: str | None = None
    report: str

    def text(self) -> str:
        return self.report


class AuthorState(TypedDict, total=False):
    context: str
    plan: str
    written: write_code.WrittenFile
    run: BacktestRun | None
    report: str
    rounds: int
    tokens: int
    #: the person's budget is used up (why)
    over: str | None


@dataclass
class _Deps:
    d: Delegation
    ask: Ask
    shown_as: str

    async def call(self, tool: str, args: JsonObject) -> str:
        outcome = await call_in(self.d, SCOPE, tool, args)
        return outcome.as_text()[:6000]


def _over_budget(state: AuthorState) -> str | None:
    if state.get("over"):
        return f"{SCOPE.name} stopped: {state.get('over')}"
    if state.get("rounds", 0) >= SCOPE.max_rounds:
        return f"{SCOPE.name} stopped after {SCOPE.max_rounds} model calls"
    if state.get("tokens", 0) >= SCOPE.max_tokens:
        return f"{SCOPE.name} stopped: its budget of {SCOPE.max_tokens} tokens is spent"
    return None


async def _earlier_runs(w: _Deps) -> str:
    """The person's kept backtests of the strategy being written (it may exist and be
    changed), else their latest of any strategy, a line each with its figures."""
    name = w.ask.name
    head = f"## Earlier backtests of {name}"
    found = await call_in(w.d, SCOPE, "list_backtests", {"strategy": name, "limit": EARLIER_RUNS})
    if isinstance(found.value, BacktestList) and not found.value.runs:
        head = f"## The person's latest backtests (none of {name} yet)"
        found = await call_in(w.d, SCOPE, "list_backtests", {"limit": EARLIER_RUNS})
    if not isinstance(found.value, BacktestList):  # an agent without the tool, say
        return f"{head}\n(not listed: {found.as_text()[:300]})"
    kept = found.value
    lines = [f"- {run.line()}" for run in kept.runs] or ["none yet"]
    if kept.skipped:
        lines.append(f"({kept.skipped} kept results could not be read)")
    return head + "\n" + "\n".join(lines)


async def _gather(state: AuthorState, runtime: Runtime[_Deps]) -> AuthorState:
    w = runtime.context
    await w.d.progress(w.shown_as, "reading your strategies and indicators")
    parts = [
        "## The person's strategies\n" + await w.call("list_strategies", {}),
        "## The person's indicators\n" + await w.call("list_indicators", {}),
        await _earlier_runs(w),
        "## Earlier talk of backtests\n"
        + await w.call(
            "search_conversation", {"query": f"backtest {w.ask.request}"[:2000], "limit": 3}
        ),
    ]
    return {"context": "\n\n".join(parts), "rounds": 0, "tokens": 0}


async def _ask_model(w: _Deps, state: AuthorState, text: str) -> tuple[str, AuthorState]:
    system = PROMPT.format(sdk=templates.sdk_doc(), context=state.get("context", ""))
    reply = await w.d.model.reply(system, [UserMessage(role="user", content=text)], [])
    over = w.d.count(reply)
    spent: AuthorState = {
        "rounds": state.get("rounds", 0) + 1,
        "tokens": state.get("tokens", 0) + reply.tokens,
    }
    if over:
        spent["over"] = over
    return reply.text.strip(), spent


async def _plan(state: AuthorState, runtime: Runtime[_Deps]) -> AuthorState:
    w = runtime.context
    if w.d.model.offline:
        code = templates.draft("strategy", w.ask.request)
        plan = "Rules: " + code.split('"""')[1]
        await w.d.progress(w.shown_as, f"plan: {plan}")
        return {"plan": plan}
    plan, spent = await _ask_model(
        w,
        state,
        f"Plan the strategy `{w.ask.name}` in a few lines (entry, exit, sizing, "
        f"parameters); no code yet: {w.ask.request}",
    )
    await w.d.progress(w.shown_as, f"plan: {plan.splitlines()[0][:200] if plan else '-'}")
    return {"plan": plan, **spent}


async def _write(state: AuthorState, runtime: Runtime[_Deps]) -> AuthorState:
    w = runtime.context
    stop = _over_budget(state)
    if stop is not None:
        ask_name = w.ask.name
        return {
            "written": write_code.WrittenFile(
                kind="strategy", name=ask_name, saved=False, rounds=0, stopped=stop
            )
        }
    # the write loop's rounds come out of this subagent's budget (one is kept to report)
    left = max(1, SCOPE.max_rounds - state.get("rounds", 0) - 1)
    d = Delegation(
        w.d.model, w.d.specs(SCOPE), w.d.run_tool, w.d.send, min(w.d.workflow_rounds, left)
    )
    ask = write_code.Ask(name=w.ask.name, request=w.ask.request)
    context = f"Plan:\n{state.get('plan', '')}\n\n{state.get('context', '')}"
    written = await write_code.write(d, "strategy", ask, w.shown_as, context)
    w.d.spent_tokens += d.spent_tokens
    w.d.spent_cost_usd += d.spent_cost_usd
    return {
        "written": written,
        "rounds": state.get("rounds", 0) + (0 if w.d.model.offline else written.rounds),
        "tokens": state.get("tokens", 0) + d.spent_tokens,
    }


def _after_write(state: AuthorState) -> str:
    return "backtest" if state["written"].saved else "report"


async def _backtest(state: AuthorState, runtime: Runtime[_Deps]) -> AuthorState:
    w, a = runtime.context, runtime.context.ask
    now = datetime.now(UTC)
    args: JsonObject = {
        "strategy": a.name,
        "ticker": a.ticker,
        "timeframe": a.timeframe,
        "start": a.start or (now - timedelta(days=30)).strftime("%Y-%m-%d"),
        "end": a.end or now.strftime("%Y-%m-%dT%H:%M"),
    }
    await w.d.progress(w.shown_as, f"backtesting {a.name} on {a.ticker} {a.timeframe}")
    outcome = await call_in(w.d, SCOPE, "run_backtest", args)
    run = outcome.value if isinstance(outcome.value, BacktestRun) else None
    if run is None:
        await w.d.progress(w.shown_as, f"the backtest failed: {outcome.as_text()[:200]}")
    return {"run": run}


async def _report(state: AuthorState, runtime: Runtime[_Deps]) -> AuthorState:
    w, written, run = runtime.context, state["written"], state.get("run")
    facts = written.text()
    if run is not None:
        shown = ", ".join(f"{k} {v}" for k, v in run.figures.items())
        facts += f"\nBacktest on {run.ticker} {run.timeframe}, {run.candles} candles: {shown}"
    if w.d.model.offline or not written.saved or _over_budget(state):
        return {"report": facts}
    text, spent = await _ask_model(
        w, state, f"Report to the trader in a few lines how `{w.ask.name}` did:\n{facts}"
    )
    return {"report": text or facts, **spent}


def _build() -> Any:
    g = StateGraph(AuthorState, context_schema=_Deps)
    g.add_node("gather", _gather)
    g.add_node("plan", _plan)
    g.add_node("write", _write)
    g.add_node("backtest", _backtest)
    g.add_node("report", _report)
    g.add_edge(START, "gather")
    g.add_edge("gather", "plan")
    g.add_edge("plan", "write")
    g.add_conditional_edges("write", _after_write, ["backtest", "report"])
    g.add_edge("backtest", "report")
    g.add_edge("report", END)
    return g.compile()


_GRAPH = _build()


async def author(d: Delegation, ask: Ask, shown_as: str) -> AuthoredStrategy:
    state: AuthorState = await _GRAPH.ainvoke({}, context=_Deps(d, ask, shown_as))
    run = state.get("run")
    return AuthoredStrategy(
        name=ask.name,
        plan=state.get("plan", ""),
        written=state["written"],
        figures=run.figures if run else {},
        chart=run.chart if run else None,
        report=state.get("report", ""),
    )
