"""The person's MCP server: context resources and tools, on the official ``mcp`` SDK.

Every tool has a JSON schema (from its typed, described parameters), a
one-line description an LLM can use, and answers bad input with an error
saying what was wrong (an MCP tool error, never a crash).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from agent.alerts import AlertError
from agent.broker.live import LiveTradingError
from agent.broker.paper import OrderError
from agent.memory import MemoryRequestError
from agent.person import PersonAgent
from agent.safe_files import UnsafeFile, read_regular
from agent.sandbox import SandboxResult, SandboxUnavailable, run_sandboxed
from agent.sandbox.protocol import (
    BacktestJob,
    BacktestOutcome,
    CostsSpec,
    Job,
    ParamValue,
    PythonJob,
    PythonOutcome,
    SweepOutcome,
    ValidateJob,
    ValidationOutcome,
)
from agent.workspace import WorkspaceError
from dexorder.embeddings import EmbeddingUnavailable
from dexorder.markets import InvalidTicker, InvalidTimeframe, Timeframe
from dexorder.times import parse_when

INSTRUCTIONS = (
    "The personal trading agent of one person: their strategies, indicators, backtests, "
    "watchlist, alerts and paper trades. Read the context:// resources first."
)

Name = Annotated[str, Field(description="file name without .py, e.g. sma_cross", max_length=64)]
Code = Annotated[str, Field(description="the whole Python file", max_length=200_000)]
When = Annotated[str, Field(description="date or time (UTC), e.g. 2024-01-01 or 2024-01-01T12:00")]


def _summary(source: str) -> str:
    """The first line of a module's docstring ("" when it has none or does not parse)."""
    try:
        doc = ast.get_docstring(ast.parse(source))
    except SyntaxError:
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def _market() -> Any:
    """:mod:`dexorder.lake.candles`, imported on first use: pandas and the lake cost ~100 MB
    of an agent that may never backtest. Its errors are ``ValueError``s."""
    from dexorder.lake import candles

    return candles


def _fail(exc: Exception) -> ToolError:
    return ToolError(str(exc))


def build_server(person: PersonAgent) -> MCPServer:
    """The MCP server of ``person``'s agent."""
    mcp = MCPServer(
        name="dexorder-agent", instructions=INSTRUCTIONS, version="0.1.0", log_level="WARNING"
    )
    docs, ws = person.documents, person.workspace

    # --- resources -------------------------------------------------------
    @mcp.resource(
        "context://user-profile",
        mime_type="application/json",
        description="Trading preferences, style and risk tolerance",
    )
    def user_profile() -> str:
        person.activity.touch()
        return json.dumps({"user": person.user, **docs.profile().model_dump()})

    @mcp.resource(
        "context://conversation-summary",
        mime_type="text/markdown",
        description="A summary of the conversation so far",
    )
    def conversation_summary() -> str:
        person.activity.touch()
        return docs.summary()

    @mcp.resource(
        "context://workspace-state",
        mime_type="application/json",
        description="Current chart, watchlist, positions and alerts",
    )
    def workspace_state() -> str:
        person.activity.touch()
        return json.dumps(
            {
                **docs.state().model_dump(),
                "watchlist": docs.watchlist(),
                "alerts": [a.model_dump() for a in person.alerts.active()],
                "positions": person.broker.book.summary()["positions"],
                "strategies": ws.names("strategies"),
                "indicators": ws.names("indicators"),
            }
        )

    @mcp.resource(
        "context://system-prompt",
        mime_type="text/markdown",
        description="The person's own instructions to their agent",
    )
    def system_prompt() -> str:
        person.activity.touch()
        return docs.instructions()

    # --- workspace: strategies and indicators -----------------------------
    def list_kind(kind: str) -> list[dict[str, str]]:
        person.activity.touch()
        out = []
        for name in ws.names(kind):
            out.append({"name": name, "description": _summary(ws.read(kind, name))})
        return out

    def read_kind(kind: str, name: str) -> dict[str, str]:
        person.activity.touch()
        try:
            return {"name": name, "code": ws.read(kind, name)}
        except WorkspaceError as exc:
            raise _fail(exc) from None

    async def write_kind(kind: str, name: str, code: str) -> dict[str, Any]:
        person.activity.touch()
        try:
            path = ws.path(kind, name)
        except WorkspaceError as exc:
            raise _fail(exc) from None
        module: Literal["indicators", "strategies"] = (
            "indicators" if kind == "indicators" else "strategies"
        )
        job = ValidateJob(module, path.stem, code, f"{kind}/{path.stem}.py")
        checked = await _sandbox(person, job)
        if not checked.ok or not isinstance(checked.outcome, ValidationOutcome):
            raise ToolError(f"not saved: {kind}/{path.stem}.py {checked.error}")
        commit = await asyncio.to_thread(ws.write, kind, path.stem, code)
        v = checked.outcome
        validation: dict[str, Any] = {"candles": v.candles, "doc": v.doc}
        if v.lines is not None:
            validation["lines"] = v.lines
        return {"name": path.stem, "commit": commit, "validation": validation}

    @mcp.tool(description="List the person's trading strategies with a line about each.")
    def list_strategies() -> dict[str, list[dict[str, str]]]:
        return {"strategies": list_kind("strategies")}

    @mcp.tool(description="Read the Python source of one strategy.")
    def read_strategy(name: Name) -> dict[str, str]:
        return read_kind("strategies", name)

    @mcp.tool(description="Validate a strategy (import, backtest sample candles), then commit it.")
    async def write_strategy(name: Name, code: Code) -> dict[str, Any]:
        return await write_kind("strategies", name, code)

    @mcp.tool(description="List the person's indicators with a line about each.")
    def list_indicators() -> dict[str, list[dict[str, str]]]:
        return {"indicators": list_kind("indicators")}

    @mcp.tool(description="Read the Python source of one indicator.")
    def read_indicator(name: Name) -> dict[str, str]:
        return read_kind("indicators", name)

    @mcp.tool(description="Validate an indicator (import, run on sample candles), then commit it.")
    async def write_indicator(name: Name, code: Code) -> dict[str, Any]:
        return await write_kind("indicators", name, code)

    @mcp.tool(
        description="Commits of the workspace, newest first; only those of one file if given."
    )
    def workspace_history(
        path: Annotated[str | None, Field(description="e.g. strategies/sma_cross.py")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> dict[str, list[dict[str, str]]]:
        person.activity.touch()
        try:
            return {"commits": [r.__dict__ for r in ws.history(path, limit)]}
        except WorkspaceError as exc:
            raise _fail(exc) from None

    @mcp.tool(description="Put a workspace file back as it was at a commit (a new commit).")
    def revert_file(
        path: Annotated[str, Field(description="e.g. strategies/sma_cross.py")],
        commit: Annotated[str, Field(description="commit id from workspace_history")],
    ) -> dict[str, str]:
        person.activity.touch()
        try:
            return {"path": path, "commit": ws.revert_file(path, commit)}
        except WorkspaceError as exc:
            raise _fail(exc) from None

    # --- conversation -------------------------------------------------------
    @mcp.tool(description="Keep one message of the conversation (the person's or the agent's).")
    async def save_message(
        role: Literal["user", "assistant"],
        text: Annotated[str, Field(min_length=1, max_length=100_000)],
        channel: Annotated[
            str, Field(max_length=32, description="web, telegram, terminal…")
        ] = "chat",
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            return await person.memory.save(role, text, channel)
        except MemoryRequestError as exc:
            raise _fail(exc) from None

    @mcp.tool(description="Find past messages closest in meaning to a query (semantic search).")
    async def search_conversation(
        query: Annotated[str, Field(min_length=1, max_length=8_000)],
        limit: Annotated[int, Field(ge=1, le=50)] = 5,
        role: Literal["user", "assistant"] | None = None,
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            return {"matches": await person.memory.search(query, limit, role)}
        except (MemoryRequestError, EmbeddingUnavailable) as exc:
            raise _fail(exc) from None

    # --- watchlist and alerts ---------------------------------------------
    @mcp.tool(description="The tickers on the person's watchlist.")
    def get_watchlist() -> dict[str, list[str]]:
        person.activity.touch()
        return {"watchlist": docs.watchlist()}

    @mcp.tool(description="Replace the watchlist with these tickers (EXCHANGE:BASE/QUOTE).")
    def set_watchlist(
        tickers: Annotated[list[str], Field(max_length=200, description="e.g. BINANCE:BTC/USDT")],
    ) -> dict[str, list[str]]:
        person.activity.touch()
        try:
            return {"watchlist": docs.set_watchlist(tickers)}
        except WorkspaceError as exc:
            raise _fail(exc) from None

    @mcp.tool(description="Alert the person when a ticker's price goes above or below a level.")
    async def set_alert(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        condition: Literal["above", "below"],
        price: Annotated[float, Field(gt=0)],
        note: Annotated[str, Field(max_length=500)] = "",
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            alert = person.alerts.add(ticker, condition, price, note)
        except AlertError as exc:
            raise _fail(exc) from None
        if person.feed is not None:
            await person.feed.watch(alert.ticker)
        return alert.model_dump()

    @mcp.tool(description="The person's alerts, active and triggered.")
    def list_alerts() -> dict[str, list[dict[str, Any]]]:
        person.activity.touch()
        return {"alerts": [a.model_dump() for a in person.alerts.all()]}

    @mcp.tool(description="Delete one alert by its id.")
    def delete_alert(alert_id: Annotated[str, Field(max_length=64)]) -> dict[str, Any]:
        person.activity.touch()
        try:
            return person.alerts.delete(alert_id).model_dump()
        except AlertError as exc:
            raise _fail(exc) from None

    # --- trading ------------------------------------------------------------
    @mcp.tool(
        description=(
            "Place an order: paper (default) fills against live candles; live needs the "
            "person's confirmation code from their channel (see confirm_trade)."
        )
    )
    async def execute_trade(
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE, e.g. BINANCE:BTC/USDT")],
        side: Literal["buy", "sell"],
        quantity: Annotated[float, Field(gt=0, description="in the base currency, e.g. 0.1 BTC")],
        order_type: Literal["market", "limit"] = "market",
        limit_price: Annotated[float | None, Field(gt=0)] = None,
        mode: Literal["paper", "live"] = "paper",
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            if mode == "live":
                return await person.live.request(ticker, side, quantity, order_type, limit_price)
            return await person.broker.execute(ticker, side, quantity, order_type, limit_price)
        except (OrderError, LiveTradingError, TimeoutError, ValueError) as exc:
            raise _fail(exc) from None

    @mcp.tool(description="Place a live order once the person has sent back its confirmation code.")
    async def confirm_trade(
        code: Annotated[str, Field(pattern=r"^[0-9]{6}$", description="the code the person sent")],
        confirmation_id: Annotated[
            str | None, Field(max_length=64, description="omit when only one order waits")
        ] = None,
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            return await person.live.confirm(confirmation_id, code)
        except LiveTradingError as exc:
            raise _fail(exc) from None

    @mcp.tool(description="Cash, positions with PnL, equity and open orders of the paper account.")
    def get_positions() -> dict[str, Any]:
        person.activity.touch()
        return person.broker.book.summary()

    @mcp.tool(description="Cancel an open paper order by its id.")
    def cancel_order(order_id: Annotated[str, Field(max_length=64)]) -> dict[str, Any]:
        person.activity.touch()
        try:
            return person.broker.cancel(order_id)
        except OrderError as exc:
            raise _fail(exc) from None

    # --- backtests and Python -------------------------------------------------
    @mcp.tool(
        description=(
            "Backtest a strategy on a ticker's candles; a list as a parameter value sweeps it "
            "(every combination, ranked)."
        )
    )
    async def run_backtest(
        strategy: Name,
        ticker: Annotated[str, Field(description="EXCHANGE:BASE/QUOTE")],
        timeframe: Annotated[str, Field(description="1m 5m 15m 1h 4h 1d")],
        start: When,
        end: When,
        params: Annotated[
            dict[str, Any], Field(description="strategy parameters; a list value is swept")
        ] = {},  # noqa: B006 - pydantic copies defaults
        fee_rate: Annotated[float, Field(ge=0, le=0.05)] = 0.001,
        slippage: Annotated[float, Field(ge=0, le=0.05)] = 0.0005,
        initial_cash: Annotated[float, Field(gt=0)] = 10_000.0,
        rank_by: Literal["sharpe", "sortino", "total_return", "cagr", "profit_factor"] = "sharpe",
    ) -> dict[str, Any]:
        person.activity.touch()
        try:
            ws.read("strategies", strategy)
            tf = Timeframe.parse(timeframe)
            start_ms, end_ms = parse_when(start), parse_when(end)
            candles = await _market().load_candles(person.cfg, ticker, tf.value, start_ms, end_ms)
        except (WorkspaceError, InvalidTicker, InvalidTimeframe, ValueError) as exc:
            raise _fail(exc) from None
        try:
            job = BacktestJob(
                strategy=strategy,
                candles="candles.parquet",
                bar_ms=tf.ms,
                filename=f"strategies/{strategy}.py",
                params=msgspec.convert(params, dict[str, ParamValue]),
                costs=CostsSpec(fee_rate, slippage, initial_cash),
                rank_by=rank_by,
                title=f"{ticker} {tf.value}",
            )
        except msgspec.ValidationError as exc:
            raise ToolError(
                f"params must map names to numbers, text, true/false or lists of them: {exc}"
            ) from None
        with run_inputs(person) as inputs:
            candles.to_parquet(inputs / "candles.parquet")
            result = await _sandbox(person, job, inputs)
        outcome = result.outcome
        if not result.ok or not isinstance(outcome, BacktestOutcome | SweepOutcome):
            raise ToolError(f"backtest failed: {result.error}")
        run_id = uuid.uuid4().hex[:12]
        about = {
            "id": run_id,
            "strategy": strategy,
            "ticker": ticker,
            "timeframe": tf.value,
            "candles": len(candles),
        }
        if isinstance(outcome, SweepOutcome):
            rows = [{"params": r.params, **r.figures} for r in outcome.rows]
            return {"sweep": rows, "rank_by": outcome.rank_by, "combinations": len(rows), **about}
        value: dict[str, Any] = {
            **msgspec.to_builtins(msgspec.structs.replace(outcome, chart_png=None)),
            **about,
        }
        del value["chart_png"]
        # a folder only the agent writes: the sandbox never sees backtests/
        out = person.backtests / run_id
        out.mkdir(parents=True)
        if outcome.chart_png is not None:
            (out / "chart.png").write_bytes(outcome.chart_png)
            value["chart"] = f"backtest://{run_id}/chart.png"
        (out / "result.json").write_text(json.dumps(value))
        return value

    @mcp.resource(
        "backtest://{run_id}/chart.png",
        mime_type="image/png",
        description="The chart of a backtest: price, trades and equity",
    )
    def backtest_chart(run_id: str) -> bytes:
        person.activity.touch()
        if not run_id.isalnum():
            raise ValueError("invalid backtest id")
        try:
            return read_regular(person.backtests, run_id, "chart.png")
        except (FileNotFoundError, UnsafeFile):
            raise ValueError(f"no chart for backtest {run_id}") from None

    @mcp.tool(
        description=(
            "Run Python (numpy, pandas, talib; candles(ticker, timeframe) for loaded candles) "
            "in a sandbox; set `result` to return a value."
        )
    )
    async def run_python(
        code: Annotated[str, Field(max_length=100_000)],
        load: Annotated[
            list[dict[str, str]],
            Field(
                description='candles to load first: [{"ticker", "timeframe", "start", "end"}]',
                max_length=10,
            ),
        ] = [],  # noqa: B006
    ) -> dict[str, Any]:
        person.activity.touch()
        files: dict[str, str] = {}
        with run_inputs(person) as inputs:
            try:
                for i, spec in enumerate(load):
                    tf = Timeframe.parse(spec.get("timeframe", "1h"))
                    frame = await _market().load_candles(
                        person.cfg,
                        spec["ticker"],
                        tf.value,
                        parse_when(spec["start"]),
                        parse_when(spec["end"]),
                    )
                    name = f"candles-{i}.parquet"
                    frame.to_parquet(inputs / name)
                    files[f"{spec['ticker'].upper()}|{tf.value}"] = name
            except KeyError as exc:
                raise ToolError(
                    f"each load needs ticker, timeframe, start and end (missing {exc})"
                ) from None
            except (InvalidTicker, InvalidTimeframe, ValueError) as exc:
                raise _fail(exc) from None
            result = await _sandbox(person, PythonJob(code, files), inputs)
        if not result.ok or not isinstance(result.outcome, PythonOutcome):
            raise ToolError(
                f"{result.error}"
                + (f"\noutput before it stopped:\n{result.output[-2000:]}" if result.output else "")
            )
        return {
            "result": json.loads(result.outcome.result_json),
            "output": result.output,
            "files": result.outcome.files,
            "seconds": round(result.seconds, 3),
        }

    return mcp


@contextlib.contextmanager
def run_inputs(person: PersonAgent) -> Iterator[Path]:
    """A fresh folder for one run's input files: the sandbox sees it read-only, and it is
    gone when the run is."""
    path = Path(tempfile.mkdtemp(dir=person.run_inputs))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _sandbox(person: PersonAgent, job: Job, inputs: Path | None = None) -> SandboxResult:
    try:
        return await asyncio.to_thread(
            run_sandboxed,
            job,
            workspace=person.workspace.root,
            inputs=inputs,
            limits=person.limits,
            mode=person.sandbox_mode,
        )
    except SandboxUnavailable as exc:
        raise ToolError(str(exc)) from None
