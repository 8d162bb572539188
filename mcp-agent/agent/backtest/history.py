"""The backtests the agent kept (``backtests/<id>/result.json``), read back as a list.

``run_backtest`` keeps each single run's result (sweeps are not kept). Listing them reads
those files only — nothing is written. A result that cannot be read as a
:class:`~dexorder.contracts.agent_tools.BacktestRun` (cut short by a crash, corrupt, or a
link planted by an old sandbox) is left out and counted, so one bad folder never hides
the others.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.safe_files import UnsafeFile, read_regular
from dexorder.contracts.agent_tools import (
    HEADLINE_FIGURES,
    BacktestList,
    BacktestRun,
    BacktestSummary,
)
from dexorder.times import iso, parse_when

#: The largest result file read (a run keeps ~500 curve points and its trades).
MAX_RESULT_BYTES = 16 * 1024 * 1024


def summarise(run_id: str, raw: bytes, kept_at_ms: int) -> BacktestSummary:
    """The summary of one kept result (pure). ``kept_at_ms``: when its folder was written,
    for results kept before runs recorded their time and range. Raises ``ValueError``
    when ``raw`` is not a whole result."""
    run = BacktestRun.model_validate_json(raw)
    start, end = run.start, run.end
    if (start is None or end is None) and run.equity_curve:
        # older results: the range the candles covered
        start = start or iso(parse_when(run.equity_curve[0][0]))
        end = end or iso(parse_when(run.equity_curve[-1][0]))
    return BacktestSummary(
        id=run_id,
        strategy=run.strategy,
        ticker=run.ticker,
        timeframe=run.timeframe,
        start=start,
        end=end,
        ran_at=run.ran_at if run.ran_at is not None else kept_at_ms,
        candles=run.candles,
        params=run.params,
        figures={k: run.figures[k] for k in HEADLINE_FIGURES if k in run.figures},
        chart=run.chart,
    )


def list_runs(root: Path, strategy: str | None = None, limit: int = 10) -> BacktestList:
    """The runs kept under ``root``, newest first: at most ``limit``, of ``strategy`` when
    given."""
    runs: list[BacktestSummary] = []
    skipped = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if not entry.name.isalnum():
            continue  # not a run's folder (run ids are hex)
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode):
                raise UnsafeFile(f"{entry.name} is not a folder")
            raw = read_regular(root, entry.name, "result.json", max_bytes=MAX_RESULT_BYTES)
            run = summarise(entry.name, raw, info.st_mtime_ns // 1_000_000)
        except (OSError, ValueError):  # UnsafeFile and pydantic's ValidationError are too
            skipped += 1
            continue
        if strategy is None or run.strategy == strategy:
            runs.append(run)
    runs.sort(key=lambda r: (r.ran_at, r.id), reverse=True)
    return BacktestList(runs=runs[:limit], more=max(0, len(runs) - limit), skipped=skipped)
