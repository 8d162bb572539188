"""Backtests (one run or a sweep) and ``run_python``, both in the person's code sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from agent.backtest.history import list_runs
from agent.person import PersonAgent
from agent.safe_files import UnsafeFile, read_regular
from agent.sandbox.protocol import (
    BacktestJob,
    BacktestOutcome,
    CostsSpec,
    ParamValue,
    PythonJob,
    PythonOutcome,
    SweepOutcome,
)
from agent.sandbox.runner import OnProgress
from agent.tools.sandboxed import _sandbox, run_inputs
from agent.tools.strategies import Name
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c
from dexorder.markets import Timeframe
from dexorder.times import iso, parse_when

When = Annotated[str, Field(description="date or time (UTC), e.g. 2024-01-01 or 2024-01-01T12:00")]
TickerArg = Annotated[str, Field(description="EXCHANGE:BASE/QUOTE")]
TimeframeArg = Annotated[str, Field(description="1m 5m 15m 1h 4h 1d")]


def _market() -> Any:
    """:mod:`dexorder.lake.candles`, imported on first use: pandas and the lake cost ~100 MB
    of an agent that may never backtest. Its errors are ``ValueError``s."""
    from dexorder.lake import candles

    return candles


@contextlib.asynccontextmanager
async def _combinations_told(ctx: Context[Any, Any]) -> AsyncIterator[OnProgress]:
    """A sandbox progress callback (called on the run's collecting thread) that tells
    the caller how many of a sweep's combinations have run, in order, all told before
    the tool answers."""
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()

    async def tell() -> None:
        while (step := await heard.get()) is not None:
            done, total = step
            if total > 1:  # one run is one step: nothing to count
                await ctx.report_progress(
                    1 + done / total, 3, f"ran {done} of {total} combinations"
                )

    def ran(done: int, total: int) -> None:
        loop.call_soon_threadsafe(heard.put_nowait, (done, total))

    teller = asyncio.create_task(tell())
    try:
        yield ran
    finally:
        heard.put_nowait(None)
        await teller


def register(box: ToolBox, person: PersonAgent) -> None:
    ws = person.workspace

    @box.tool(
        c.RUN_BACKTEST,
        "Backtest a strategy on a ticker's candles; a list as a parameter value sweeps it "
        "(every combination, ranked).",
    )
    async def run_backtest(
        strategy: Name,
        ticker: TickerArg,
        timeframe: TimeframeArg,
        start: When,
        end: When,
        ctx: Context[Any, Any],
        params: Annotated[
            dict[str, c.ParamValue],
            Field(description="strategy parameters; a list value is swept"),
        ] = {},  # noqa: B006 - pydantic copies defaults
        fee_rate: Annotated[float, Field(ge=0, le=0.05)] = 0.001,
        slippage: Annotated[float, Field(ge=0, le=0.05)] = 0.0005,
        initial_cash: Annotated[float, Field(gt=0)] = 10_000.0,
        rank_by: Literal["sharpe", "sortino", "total_return", "cagr", "profit_factor"] = "sharpe",
    ) -> c.BacktestRun | c.SweepRun:
        ws.read("strategies", strategy)
        tf = Timeframe.parse(timeframe)
        start_ms, end_ms = parse_when(start), parse_when(end)
        # what the caller sees while it runs (MCP progress: a no-op unless it asked)
        await ctx.report_progress(0, 3, f"loading {ticker} {tf.value} candles")
        candles = await _market().load_candles(person.cfg, ticker, tf.value, start_ms, end_ms)
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
        await ctx.report_progress(
            1, 3, f"running {strategy} on {len(candles):,} candles in the sandbox"
        )
        with run_inputs(person) as inputs:
            candles.to_parquet(inputs / "candles.parquet")
            async with _combinations_told(ctx) as ran:
                result = await _sandbox(person, job, inputs, ran)
        outcome = result.outcome
        if not result.ok or not isinstance(outcome, BacktestOutcome | SweepOutcome):
            raise ToolError(f"backtest failed: {result.error}")
        await ctx.report_progress(
            2, 3, f"ran in {result.seconds:.1f} s; keeping the result and its chart"
        )
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
            return c.SweepRun.model_validate(
                {"sweep": rows, "rank_by": outcome.rank_by, "combinations": len(rows), **about}
            )
        # a folder only the agent writes: the sandbox never sees backtests/
        out = person.backtests / run_id
        out.mkdir(parents=True)
        chart = None
        if outcome.chart_png is not None:
            (out / "chart.png").write_bytes(outcome.chart_png)
            chart = f"backtest://{run_id}/chart.png"
        run = c.BacktestRun.model_validate(
            {
                **about,
                "params": outcome.params,
                "mode": outcome.mode,
                "figures": outcome.figures,
                "trades": msgspec.to_builtins(outcome.trades),
                "equity_curve": outcome.equity_curve,
                "chart": chart,
                "start": iso(start_ms),
                "end": iso(end_ms),
                "ran_at": time.time_ns() // 1_000_000,
            }
        )
        (out / "result.json").write_text(run.model_dump_json())
        await ctx.report_progress(3, 3, "done")
        return run

    @box.sync_tool(
        c.LIST_BACKTESTS,
        "List the person's earlier backtests, newest first: strategy, market, range, when, "
        "parameters and headline figures (sweeps are not kept).",
    )
    def list_backtests(
        strategy: Annotated[
            str | None, Field(description="only this strategy's runs", max_length=64)
        ] = None,
        limit: Annotated[int, Field(ge=1, le=c.MAX_BACKTESTS_LISTED)] = 10,
    ) -> c.BacktestList:
        return list_runs(person.backtests, strategy, limit)

    @box.resource(
        "backtest://{run_id}/chart.png",
        mime_type="image/png",
        description="The chart of a backtest: price, trades and equity",
    )
    def backtest_chart(run_id: str) -> bytes:
        if not run_id.isalnum():
            raise ValueError("invalid backtest id")
        try:
            return read_regular(person.backtests, run_id, "chart.png")
        except (FileNotFoundError, UnsafeFile):
            raise ValueError(f"no chart for backtest {run_id}") from None

    @box.tool(
        c.RUN_PYTHON,
        "Run Python (numpy, pandas, talib; candles(ticker, timeframe) for loaded candles) "
        "in a sandbox; set `result` to return a value.",
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
    ) -> c.PythonRun:
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
            result = await _sandbox(person, PythonJob(code, files), inputs)
        if not result.ok or not isinstance(result.outcome, PythonOutcome):
            raise ToolError(
                f"{result.error}"
                + (f"\noutput before it stopped:\n{result.output[-2000:]}" if result.output else "")
            )
        return c.PythonRun(
            result=json.loads(result.outcome.result_json),
            output=result.output,
            files=result.outcome.files,
            seconds=round(result.seconds, 3),
        )
