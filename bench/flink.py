"""The PyFlink job on the mini-cluster against the local runner's fold, on the same ticks.

Figures, one run, one fixture (:func:`bench.rules.market_ticks`: 20 tickers, 5 ms apart):

* the local runner's fold: ``TickPipeline.feed`` (decode, validate, ``CandleBook``, six
  timeframes), in one process: the baseline;
* the Flink job (``streaming/flink``, files in and out, checkpoints every 5 s) with
  parallelism 1 and 2: ticks per second from its first tick folded to the end of its input
  (the workers log both; the JVM's and the Python workers' start-up are left out, and
  printed apart as the whole run's wall time);
* the job's per-ticker fold outside Flink, its state kept as an object (as the job keeps it)
  or written to and read from MessagePack on every tick;
* the job with 10k active rules over the 20 tickers (:func:`bench.rules.market_rules`):
  ticks/s and rule evaluations/s (ticks/s x rules on the tick's ticker), as the RuleBook
  benchmark (``python -m bench rules``) counts them.

The job runs in ``.venv-flink`` (``make flink-venv``); without it this benchmark says so and
measures nothing.
"""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec

from bench.common import row
from bench.rules import TICKERS, market_rules, market_ticks
from dexorder.contracts.rules import RuleRecord
from dexorder.schemas import Tick, encode
from streaming.flink.keyed import KeyState, TickerFold
from streaming.pipeline import TickPipeline

# the job's log markers (the module imports PyFlink, so they are repeated, not imported)
FIRST_TICK = "first tick folded"
INPUT_ENDED = "input ended"

ROOT = Path(__file__).resolve().parents[1]
FLINK_PYTHON = ROOT / ".venv-flink" / "bin" / "python"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def local_fold(ticks: list[Tick]) -> float:
    """Ticks/s through the local runner's fold (decode + validate + six timeframes)."""
    data = [encode(t) for t in ticks]
    pipe = TickPipeline(2_000)
    now = int(time.time() * 1000)
    t = time.perf_counter()
    for i in range(0, len(data), 5_000):
        pipe.feed(data[i : i + 5_000], now)
    pipe.idle(now + 10**12)
    return len(data) / (time.perf_counter() - t)


def state_cost(ticks: list[Tick]) -> tuple[float, float]:
    """Ticks/s through the job's per-ticker fold (:class:`TickerFold`) keeping each ticker's
    state as a live object (what the job does: Flink's state cache pickles it at flushes),
    and the same with the state written to and read back from its MessagePack snapshot on
    every tick (a ValueState of bytes with no cache)."""
    rates = []
    for per_tick in (False, True):
        fold = TickerFold(2_000)
        states: dict[str, KeyState] = {}
        t = time.perf_counter()
        for tick in ticks:
            key = tick.ticker
            state = states.get(key)
            if state is None:
                state = states[key] = fold.new_state(key)
            elif per_tick:
                state = KeyState.restore(states[key].snapshot())
            fold.on_tick(state, tick, 0)
            states[key] = state
        rates.append(len(ticks) / (time.perf_counter() - t))
    return rates[0], rates[1]


def _fold_window(log_dir: Path) -> float:
    """Seconds from the first tick folded to the end of the input (the last subtask's),
    from the workers' lines in the task manager's log."""
    first: list[datetime.datetime] = []
    ended: list[datetime.datetime] = []
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            found = FIRST_TICK in line, INPUT_ENDED in line
            m = _STAMP.match(line) if any(found) else None
            if m is None:
                continue
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            (first if found[0] else ended).append(at)
    if not first or not ended:
        raise RuntimeError(f"no '{FIRST_TICK}'/'{INPUT_ENDED}' in the Flink log under {log_dir}")
    return (max(ended) - min(first)).total_seconds()


def flink_run(
    work: Path, ticks_file: Path, parallelism: int, rules_file: Path | None = None
) -> tuple[float, float, int]:
    """Run the job; return (seconds it folded ticks, wall seconds, closed candles written)."""
    name = f"p{parallelism}{'-rules' if rules_file else ''}"
    out = work / name
    files: dict[str, str] = {"ticks": str(ticks_file), "out": str(out)}
    if rules_file is not None:
        files["rules"] = str(rules_file)
    config = {
        "files": files,
        "parallelism": parallelism,
        "checkpoints": {"interval_ms": 5_000, "dir": (work / f"ck-{name}").as_uri()},
    }
    cfg = work / f"{name}.json"
    cfg.write_bytes(msgspec.json.encode(config))
    log_dir = work / f"log-{name}"
    t = time.perf_counter()
    proc = subprocess.run(
        [str(FLINK_PYTHON), "-m", "streaming.flink.job", "--config", str(cfg)],
        cwd=ROOT,
        env={"FLINK_LOG_DIR": str(log_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=3_600,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"the Flink job failed:\n{proc.stdout.decode()[-3000:]}")
    candles = sum(len(p.read_bytes().splitlines()) for p in (out / "candles").rglob("*.jsonl"))
    return _fold_window(log_dir), wall, candles


def main(
    n_ticks: int = 1_000_000, rules_ticks: int = 200_000, n_rules: int = 10_000
) -> dict[str, float]:
    print(f"flink: the PyFlink job against the local fold, {n_ticks:,} ticks of 20 tickers")
    if not FLINK_PYTHON.exists() or shutil.which("java") is None:
        row("skipped", "-", "needs .venv-flink (make flink-venv) and Java 17")
        return {}
    ticks = market_ticks(n_ticks)
    local = local_fold(ticks)
    row("local runner's fold (decode+validate+6 tf)", f"{local:,.0f} ticks/s", "one process")
    results: dict[str, float] = {"local_fold_ticks_s": local}
    kept, per_tick = state_cost(ticks[:200_000])
    row("job's fold, state kept as an object", f"{kept:,.0f} ticks/s", "200k ticks, no Flink")
    row(
        "job's fold, state via msgpack every tick",
        f"{per_tick:,.0f} ticks/s",
        f"{per_tick / kept:.2f}x: why the state is cached as an object",
    )
    results["fold_object_ticks_s"] = kept
    results["fold_msgpack_ticks_s"] = per_tick
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ticks_file = work / "ticks.jsonl"
        with ticks_file.open("wb") as f:
            for tick in ticks:
                f.write(msgspec.json.encode(tick) + b"\n")
        for p in (1, 2):
            ran, wall, candles = flink_run(work, ticks_file, p)
            rate = n_ticks / ran
            results[f"flink_p{p}_ticks_s"] = rate
            row(
                f"Flink job, parallelism {p}",
                f"{rate:,.0f} ticks/s",
                f"{rate / local:.3f}x local; folding {ran:.0f} s, whole run {wall:.0f} s, "
                f"{candles:,} candles",
            )
        few = work / "ticks-rules.jsonl"
        with few.open("wb") as f:
            for tick in ticks[:rules_ticks]:
                f.write(msgspec.json.encode(tick) + b"\n")
        rules_file = work / "rules.jsonl"
        with rules_file.open("wb") as f:
            for rule in market_rules(n_rules):
                f.write(msgspec.json.encode(RuleRecord(rule=rule)) + b"\n")
        ran, wall, _ = flink_run(work, few, 1, rules_file)
        rate = rules_ticks / ran
        per_ticker = n_rules / len(TICKERS)
        results["flink_rules_ticks_s"] = rate
        results["flink_rule_evals_s"] = rate * per_ticker
        row(
            f"Flink job p1, {n_rules:,} rules ({rules_ticks:,} ticks)",
            f"{rate:,.0f} ticks/s",
            f"{rate / results['flink_p1_ticks_s']:.2f}x without rules; whole run {wall:.0f} s",
        )
        row(
            "  rule evaluations (ticks/s x rules on the ticker)",
            f"{rate * per_ticker:,.0f}/s",
        )
    return results


if __name__ == "__main__":
    main()
