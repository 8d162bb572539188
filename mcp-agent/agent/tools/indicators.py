"""An indicator of the person's workspace computed over a market's candles, in the
sandbox (their code runs nowhere else), for the page to draw over its chart."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from agent.person import PersonAgent
from agent.sandbox.protocol import IndicatorJob, IndicatorOutcome, Scalar
from agent.tools.backtests import TickerArg, TimeframeArg, When, _market
from agent.tools.sandboxed import _sandbox, run_inputs
from agent.tools.strategies import Name
from agent.tools.toolbox import ToolBox
from dexorder.contracts import agent_tools as c
from dexorder.indicator_params import ParamError, check_params, declared_params
from dexorder.markets import Timeframe
from dexorder.times import parse_when


def register(box: ToolBox, person: PersonAgent) -> None:
    ws = person.workspace

    @box.tool(
        c.COMPUTE_INDICATOR,
        "Compute one of the person's indicators over a ticker's candles: a value per candle "
        "for each of its lines (the latest few are shown).",
    )
    async def compute_indicator(
        name: Name,
        ticker: TickerArg,
        timeframe: TimeframeArg,
        start: When,
        end: When,
        ctx: Context[Any, Any],
        params: Annotated[
            dict[str, Scalar], Field(description="the indicator's parameters (else its PARAMS)")
        ] = {},  # noqa: B006 - pydantic copies defaults
    ) -> c.IndicatorSeries:
        # a clear "no indicator named ..." and a check of the parameters before any candles
        declared = declared_params(ws.read("indicators", name))
        if declared is not None:  # computed PARAMS: the run itself judges them
            try:
                params = check_params(name, declared, params)
            except ParamError as exc:
                raise ToolError(str(exc)) from None
        tf = Timeframe.parse(timeframe)
        start_ms, end_ms = parse_when(start), parse_when(end)
        if end_ms <= start_ms:
            raise ToolError("start must be before end")
        await ctx.report_progress(0, 2, f"loading {ticker} {tf.value} candles")
        candles = await _market().load_candles(person.cfg, ticker, tf.value, start_ms, end_ms)
        await ctx.report_progress(1, 2, f"computing {name} over {len(candles):,} candles")
        job = IndicatorJob(
            name=name,
            candles="candles.parquet",
            filename=f"indicators/{name}.py",
            params=msgspec.convert(params, dict[str, Scalar]),
        )
        with run_inputs(person) as inputs:
            candles.to_parquet(inputs / "candles.parquet")
            result = await _sandbox(person, job, inputs)
        outcome = result.outcome
        if not result.ok or not isinstance(outcome, IndicatorOutcome):
            raise ToolError(f"{name} failed: {result.error}")
        await ctx.report_progress(2, 2, "done")
        # all candles went in (its warm-up); the newest MAX_POINTS come out
        keep = c.MAX_INDICATOR_POINTS
        times = [int(ts.timestamp() * 1000) for ts in candles.index[-keep:]]
        return c.IndicatorSeries(
            indicator=name,
            ticker=ticker.upper(),
            timeframe=tf.value,
            params=outcome.params,
            times=times,
            lines=[c.IndicatorLine(name=ln.name, values=ln.values[-keep:]) for ln in outcome.lines],
        )
