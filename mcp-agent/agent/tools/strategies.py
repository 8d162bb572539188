"""Strategies and indicators: the person's Python files, validated in the sandbox before
they are committed."""

from __future__ import annotations

import ast
import asyncio
from typing import Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from agent.person import PersonAgent
from agent.sandbox.protocol import ValidateJob, ValidationOutcome
from agent.tools.sandboxed import _sandbox
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c
from dexorder.indicator_params import declared_params

Name = Annotated[str, Field(description="file name without .py, e.g. sma_cross", max_length=64)]
Code = Annotated[str, Field(description="the whole Python file", max_length=200_000)]
Kind = Literal["strategies", "indicators"]


def _summary(source: str) -> str:
    """The first line of a module's docstring ("" when it has none or does not parse)."""
    try:
        doc = ast.get_docstring(ast.parse(source))
    except SyntaxError:
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def register(box: ToolBox, person: PersonAgent) -> None:
    ws = person.workspace

    def list_kind(kind: Kind) -> list[c.FileSummary]:
        summaries = []
        for name in ws.names(kind):
            source = ws.read(kind, name)
            summaries.append(
                c.FileSummary(
                    name=name, description=_summary(source), params=declared_params(source)
                )
            )
        return summaries

    def read_kind(kind: Kind, name: str) -> c.SourceFile:
        return c.SourceFile(name=name, code=ws.read(kind, name))

    async def write_kind(kind: Kind, name: str, code: str) -> c.SavedFile:
        path = ws.path(kind, name)
        job = ValidateJob(kind, path.stem, code, f"{kind}/{path.stem}.py")
        checked = await _sandbox(person, job)
        if not checked.ok or not isinstance(checked.outcome, ValidationOutcome):
            raise ToolError(f"not saved: {kind}/{path.stem}.py {checked.error}")
        commit = await asyncio.to_thread(ws.write, kind, path.stem, code)
        v = checked.outcome
        validation = c.Validation(candles=v.candles, doc=v.doc, lines=v.lines)
        return c.SavedFile(name=path.stem, commit=commit, validation=validation)

    @box.sync_tool(
        c.LIST_STRATEGIES, "List the person's trading strategies with a line about each."
    )
    def list_strategies() -> c.StrategyList:
        return c.StrategyList(strategies=list_kind("strategies"))

    @box.sync_tool(c.READ_STRATEGY, "Read the Python source of one strategy.")
    def read_strategy(name: Name) -> c.SourceFile:
        return read_kind("strategies", name)

    @box.tool(
        c.WRITE_STRATEGY, "Validate a strategy (import, backtest sample candles), then commit it."
    )
    async def write_strategy(name: Name, code: Code) -> c.SavedFile:
        return await write_kind("strategies", name, code)

    @box.sync_tool(c.LIST_INDICATORS, "List the person's indicators with a line about each.")
    def list_indicators() -> c.IndicatorList:
        return c.IndicatorList(indicators=list_kind("indicators"))

    @box.sync_tool(c.READ_INDICATOR, "Read the Python source of one indicator.")
    def read_indicator(name: Name) -> c.SourceFile:
        return read_kind("indicators", name)

    @box.tool(
        c.WRITE_INDICATOR, "Validate an indicator (import, run on sample candles), then commit it."
    )
    async def write_indicator(name: Name, code: Code) -> c.SavedFile:
        return await write_kind("indicators", name, code)
