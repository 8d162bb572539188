"""``list_backtests``: the runs the agent kept, read back through a real MCP session —
newest first, by strategy, limited, with a corrupt result and a planted link left out
and counted, and nothing written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dexorder.contracts.agent_tools import (
    HEADLINE_FIGURES,
    LIST_BACKTESTS,
    MAX_BACKTESTS_LISTED,
    BacktestList,
)
from tests.agent.conftest import Agent, fill_lake, first_text

pytestmark = pytest.mark.integration

MARKET = {"ticker": "BINANCE:BTC/USDT", "timeframe": "1h"}


def data(result: Any) -> Any:
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


def listing(result: Any) -> BacktestList:
    assert not result.is_error, result.content[0].text
    return LIST_BACKTESTS.parse(result.structured_content)


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: a file's bytes, a link's target."""
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


async def test_kept_backtests_are_listed_newest_first_and_bad_results_are_counted(
    agent: Agent,
) -> None:
    fill_lake(agent.cfg, days=10)  # 2024-01-01 .. 2024-01-11, hourly BTC
    runs: list[dict[str, Any]] = []
    async with agent.client() as c:
        for strategy, start, end in (
            ("sma_cross", "2024-01-02", "2024-01-08"),
            ("rsi_reversion", "2024-01-02", "2024-01-10"),
            ("sma_cross", "2024-01-03", "2024-01-10"),
            ("rsi_reversion", "2024-01-04", "2024-01-10"),
        ):
            args = {"strategy": strategy, **MARKET, "start": start, "end": end}
            runs.append(data(await c.call_tool("run_backtest", args)))

        kept = agent.person.backtests
        # a result cut short (the agent stopped while writing it) ...
        torn = kept / "0badc0ffee00"
        torn.mkdir()
        (torn / "result.json").write_text((kept / runs[0]["id"] / "result.json").read_text()[:300])
        # ... and a link an old sandbox planted, pointing at another run's result
        planted = kept / "0badc0ffee01"
        planted.mkdir()
        (planted / "result.json").symlink_to(kept / runs[1]["id"] / "result.json")
        before = snapshot(kept)

        every = listing(await c.call_tool("list_backtests", {}))
        assert [r.id for r in every.runs] == [r["id"] for r in reversed(runs)]
        assert (every.skipped, every.more) == (2, 0)
        for shown, ran in zip(every.runs, reversed(runs), strict=True):
            assert (shown.strategy, shown.ticker, shown.timeframe, shown.candles) == (
                ran["strategy"],
                ran["ticker"],
                ran["timeframe"],
                ran["candles"],
            )
            # the headline figures are the run's own, as run_backtest answered them
            assert shown.figures == {k: ran["figures"][k] for k in HEADLINE_FIGURES}
            assert shown.params == ran["params"] and shown.chart == ran["chart"]
            assert (shown.start, shown.end) == (ran["start"], ran["end"])
            assert shown.ran_at == ran["ran_at"]
        assert every.runs[0].start == "2024-01-04 00:00"
        assert every.runs[0].end == "2024-01-10 00:00"
        assert every.runs[0].ran_at >= every.runs[1].ran_at >= every.runs[3].ran_at

        sma = listing(await c.call_tool("list_backtests", {"strategy": "sma_cross"}))
        assert [r.id for r in sma.runs] == [runs[2]["id"], runs[0]["id"]]
        newest = listing(await c.call_tool("list_backtests", {"strategy": "sma_cross", "limit": 1}))
        assert [r.id for r in newest.runs] == [runs[2]["id"]] and newest.more == 1
        said = sma.runs[0].line()
        assert said.startswith("sma_cross on BINANCE:BTC/USDT 1h, 2024-01-03 00:00 to 2024-01-10")
        none = listing(await c.call_tool("list_backtests", {"strategy": "ghost"}))
        assert none.runs == [] and none.skipped == 2

        for limit in (0, MAX_BACKTESTS_LISTED + 1):  # the cap is the contract's, said to the caller
            refused = await c.call_tool("list_backtests", {"limit": limit})
            assert refused.is_error and "limit" in first_text(refused)

        assert snapshot(kept) == before  # read-only


async def test_a_result_kept_before_runs_recorded_their_range_still_lists(agent: Agent) -> None:
    fill_lake(agent.cfg, days=3)
    args = {"strategy": "sma_cross", **MARKET, "start": "2024-01-01", "end": "2024-01-03"}
    async with agent.client() as c:
        ran = data(await c.call_tool("run_backtest", args))
        path = agent.person.backtests / ran["id"] / "result.json"
        old = json.loads(path.read_text())
        for key in ("start", "end", "ran_at"):
            del old[key]
        path.write_text(json.dumps(old))
        os.utime(path.parent, ns=(1_700_000_000_000_000_000,) * 2)

        (shown,) = listing(await c.call_tool("list_backtests", {})).runs
    # the range the candles covered, and when its folder was written
    first, last = ran["equity_curve"][0][0], ran["equity_curve"][-1][0]
    assert (shown.start, shown.end) == (first[:16].replace("T", " "), last[:16].replace("T", " "))
    assert shown.ran_at == 1_700_000_000_000
