"""The skills, subagents and workflows as the turn's model sees them: tools of their own.

``skill_<name>`` runs a skill (:mod:`.skills`), ``agent_<name>`` a subagent
(:mod:`.subagents`), ``workflow_<name>`` a workflow (:mod:`.workflows`). Each answers with
a typed :class:`~gateway.harness.reports.Report`; the turn counts their tokens as its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.harness.agent_link import ToolOutcome
from gateway.harness.model import ToolCall, ToolSpec
from gateway.harness.reports import Report
from gateway.harness.skills.registry import skills
from gateway.harness.subagents import market_analyst, strategy_author
from gateway.harness.subagents.loop import Delegation
from gateway.harness.workflows import sweep, write_code


@dataclass(frozen=True)
class Delegate:
    """One subagent or workflow offered as a tool."""

    name: str
    description: str
    input: type[BaseModel]
    output: type[Report]
    #: the agent tools it needs (offered only when the person's agent has them)
    needs: frozenset[str]
    start: Callable[[Delegation, Any, str], Awaitable[Report | str]]

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.input.model_json_schema())


async def _author(d: Delegation, ask: strategy_author.Ask, shown: str) -> Report:
    return await strategy_author.author(d, ask, shown)


async def _analyst(d: Delegation, ask: market_analyst.Ask, shown: str) -> Report:
    return await market_analyst.analyse(d, ask)


async def _write_strategy(d: Delegation, ask: write_code.Ask, shown: str) -> Report:
    return await write_code.write(d, "strategy", ask, shown)


async def _write_indicator(d: Delegation, ask: write_code.Ask, shown: str) -> Report:
    return await write_code.write(d, "indicator", ask, shown)


async def _sweep(d: Delegation, ask: sweep.Ask, shown: str) -> Report | str:
    return await sweep.sweep(d, ask, shown)


DELEGATES: dict[str, Delegate] = {
    d.name: d
    for d in (
        Delegate(
            "agent_strategy_author",
            "A strategy author: plans a strategy from the person's idea, writes it, has the "
            "sandbox validate it (fixing what fails), backtests it and reports with a chart.",
            strategy_author.Ask,
            strategy_author.AuthoredStrategy,
            frozenset({"write_strategy", "run_backtest"}),
            _author,
        ),
        Delegate(
            "agent_market_analyst",
            "A market analyst: looks at the watchlist's candles, indicators and alerts and "
            "writes a short analysis; the candles are charted for the person.",
            market_analyst.Ask,
            market_analyst.MarketAnalysis,
            frozenset({"get_watchlist"}),
            _analyst,
        ),
        Delegate(
            "workflow_write_strategy",
            "Write a strategy file and have the sandbox validate it, fixing what fails, a "
            "few rounds at most.",
            write_code.Ask,
            write_code.WrittenFile,
            frozenset({"write_strategy"}),
            _write_strategy,
        ),
        Delegate(
            "workflow_write_indicator",
            "Write an indicator file and have the sandbox validate it, fixing what fails, a "
            "few rounds at most.",
            write_code.Ask,
            write_code.WrittenFile,
            frozenset({"write_indicator"}),
            _write_indicator,
        ),
        Delegate(
            "workflow_sweep",
            "Sweep a strategy's parameters: a grid (given, or around its defaults) run as "
            "backtests, the best by a stated metric, with the overfitting caveat.",
            sweep.Ask,
            sweep.SweepReport,
            frozenset({"run_backtest", "read_strategy"}),
            _sweep,
        ),
    )
}


def names() -> frozenset[str]:
    return frozenset(DELEGATES) | frozenset(skills())


def reports() -> dict[str, type[Report]]:
    """Each delegate tool's result type, by tool name."""
    out: dict[str, type[Report]] = {n: d.output for n, d in DELEGATES.items()}
    return out | {n: s.output for n, s in skills().items()}


@cache
def _all_specs() -> list[tuple[frozenset[str], bool, ToolSpec]]:
    """Each delegate's spec (its JSON schema made once: ~2 ms a turn otherwise), with the
    tools it needs and whether it needs all of them (else any)."""
    out = [(s.tools, False, s.spec()) for s in skills().values()]
    return out + [(d.needs, True, d.spec()) for d in DELEGATES.values()]


def specs(available: set[str]) -> list[ToolSpec]:
    """The delegate tools whose tools the turn has (``available``: the turn's tool names)."""
    return [
        spec
        for needs, every, spec in _all_specs()
        if (needs <= available if every else needs & available)
    ]


async def run(d: Delegation, call: ToolCall) -> ToolOutcome:
    """Run the skill, subagent or workflow ``call`` names."""
    skill = skills().get(call.name)
    if skill is not None:
        return await skill.run(d, call.arguments)
    delegate = DELEGATES[call.name]
    try:
        ask = delegate.input.model_validate(call.arguments)
    except ValidationError as exc:
        wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return ToolOutcome(f"{call.name}: invalid arguments: {wrong}", is_error=True)
    done = await delegate.start(d, ask, call.name)
    if isinstance(done, str):
        return ToolOutcome(done, is_error=True)
    failed = isinstance(done, write_code.WrittenFile) and not done.saved
    return ToolOutcome(done, is_error=failed)
