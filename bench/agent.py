"""(e) The person's agent: MCP round trip, cold start, idle memory, backtest speed.

Figures, each beside a baseline from the same run:

* an MCP tool call (``get_positions``) over streamable HTTP on loopback, p50/p99;
  baseline: a bare authenticated HTTP GET of the same server's ``/healthz``;
* cold start: process start → first answered MCP call, of ``dexorder agent``;
  baseline: a bare Python interpreter starting and exiting;
* idle RSS of that agent after its first call; baseline: a bare interpreter's RSS;
* an SMA-cross backtest over 1M 1m candles (signals + engine + metrics);
  baseline: the two TA-Lib SMAs alone;
* a 100-combination parameter sweep over 100k candles.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
import pandas as pd
import talib
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from agent.app import start_http
from agent.backtest.engine import Costs, run
from agent.backtest.metrics import report
from agent.backtest.runtime import sweep_grid
from agent.person import PersonAgent
from bench.common import free_port, pct, row
from dexorder.config import Settings
from dexorder.tokens import mint_token, token_keys


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _round_trip(home: Path) -> tuple[list[float], list[float]]:
    cfg = Settings(home=home)
    person = PersonAgent(cfg, "bench")
    port = free_port()
    server = await start_http(person, "127.0.0.1", port)
    token = mint_token(token_keys(cfg), "bench")
    url = f"http://127.0.0.1:{port}/mcp"
    mcp_ms, http_ms = [], []
    try:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
            Client(streamable_http_client(url, http_client=http)) as c,
        ):
            for _ in range(50):
                await c.call_tool("get_positions", {})
            for _ in range(500):
                t0 = time.perf_counter()
                await c.call_tool("get_positions", {})
                mcp_ms.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await http.get(f"http://127.0.0.1:{port}/healthz")
                http_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        await server.stop()
    return mcp_ms, http_ms


async def _cold_start(home: Path) -> tuple[float, float]:
    """Seconds from process start to the first answered call, and the agent's RSS then."""
    port = free_port()
    env = {**os.environ, "DEXORDER_HOME": str(home)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "--user", "cold", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        token = proc.stdout.readline().strip().removeprefix("token: ")
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            while True:
                try:
                    async with Client(streamable_http_client(url, http_client=http)) as c:
                        await c.call_tool("get_positions", {})
                        break
                except Exception:
                    if proc.poll() is not None:
                        raise RuntimeError("the agent exited") from None
                    await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        return elapsed, _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def _bare_python() -> tuple[float, float]:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    start = time.perf_counter() - t0
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    time.sleep(0.3)
    rss = _rss_mb(proc.pid)
    proc.kill()
    proc.wait()
    return start, rss


def _candles(n: int) -> pd.DataFrame:
    rnd = np.random.default_rng(11)
    close = 30_000 * np.exp(np.cumsum(rnd.normal(0, 0.001, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.0005,
            "low": np.minimum(open_, close) * 0.9995,
            "close": close,
        }
    )


def _sma_cross(c: pd.DataFrame, fast: int, slow: int) -> float:
    close = c["close"].to_numpy()
    target = (talib.SMA(close, fast) > talib.SMA(close, slow)).astype(np.float64)
    r = run(c["open"].to_numpy(), c["high"].to_numpy(), c["low"].to_numpy(), close, target, Costs())
    return report(r, 10_000, 60_000, len(c) * 60_000).sharpe


def main() -> dict[str, float]:
    print("(e) the person's agent")
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        mcp_ms, http_ms = asyncio.run(_round_trip(Path(tmp) / "rt"))
        row(
            "MCP tool call get_positions, p50",
            f"{pct(mcp_ms, 50):.2f} ms",
            f"p99 {pct(mcp_ms, 99):.2f} ms; bare GET /healthz p50 {pct(http_ms, 50):.2f} ms",
        )
        results["rt_p50_ms"] = pct(mcp_ms, 50)
        cold, rss = asyncio.run(_cold_start(Path(tmp) / "cold"))
        bare_start, bare_rss = _bare_python()
        row("cold start → first answered call", f"{cold:.2f} s", f"bare Python {bare_start:.2f} s")
        row("idle RSS after the first call", f"{rss:.0f} MB", f"bare Python {bare_rss:.0f} MB")
        results["cold_s"], results["rss_mb"] = cold, rss

    big = _candles(1_000_000)
    t0 = time.perf_counter()
    close = big["close"].to_numpy()
    talib.SMA(close, 10), talib.SMA(close, 30)
    sma_s = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        _sma_cross(big, 10, 30)
        times.append(time.perf_counter() - t0)
    row("SMA-cross backtest, 1M 1m candles", f"{min(times):.2f} s", f"the SMAs alone {sma_s:.3f} s")
    results["backtest_1m_s"] = min(times)

    small = _candles(100_000)
    grid = sweep_grid(
        {
            "fast": [5, 8, 10, 12, 15, 20, 25, 30, 40, 50],
            "slow": [60, 80, 100, 120, 150, 180, 200, 250, 300, 400],
        }
    )
    t0 = time.perf_counter()
    for params in grid:
        _sma_cross(small, params["fast"], params["slow"])
    sweep_s = time.perf_counter() - t0
    row(
        f"sweep of {len(grid)} combinations, 100k candles",
        f"{sweep_s:.2f} s",
        f"{sweep_s / len(grid) * 1000:.1f} ms a combination",
    )
    results["sweep_s"] = sweep_s
    return results


if __name__ == "__main__":
    main()
