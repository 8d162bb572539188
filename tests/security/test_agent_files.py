"""Threat: the person's code steering the agent itself (which runs unsandboxed) through
files: a strategy's module body leaking what it read via its docstring, links planted
where the agent later reads or writes (a backtest's chart and result, candle inputs).

The sandbox writes nothing to disk any more (its scratch is a tmpfs), results come
back over a pipe, and the agent reads its own files without following links.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import BlobResourceContents

from agent.sandbox import isolation
from dexorder.config import Settings
from dexorder.contracts.agent_tools import RUN_BACKTEST, RUN_PYTHON, BacktestRun
from dexorder.tokens import token_keys
from tests.agent.conftest import Agent, fill_lake, serve_agent

# skipped on a machine without the sandbox, never in CI (.ci/run installs bubblewrap)
pytestmark = pytest.mark.skipif(
    not isolation.status().available and not os.environ.get("CI"),
    reason=f"no kernel sandbox here: {isolation.status().reason}",
)

BACKTEST = {
    "ticker": "BINANCE:BTC/USDT",
    "timeframe": "1h",
    "start": "2024-01-01",
    "end": "2024-01-03",
}


@pytest.fixture
def cfg(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", agent={"sandbox": {"cpu_s": 10, "wall_s": 30}})


@pytest.fixture
async def agent(cfg: Settings) -> AsyncIterator[Agent]:
    async with serve_agent(cfg) as served:
        yield served


def secret_of(cfg: Settings) -> Path:
    key = cfg.home / "state" / "agent_token_ed25519.pem"
    assert key.is_file()  # the agent's tokens were made with it
    return key


def bob_prompt(cfg: Settings) -> Path:
    path = cfg.agent_dir("bob") / "workspace" / "instructions.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("bob's own instructions")
    return path


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_module_docstring_cannot_carry_a_secret_out(agent: Agent) -> None:
    """Validation ran the module body, which read the key natively and set ``__doc__``."""
    key = secret_of(agent.cfg)
    code = (
        "import pyarrow.fs as fs\n"
        "try:\n"
        f"    __doc__ = fs.LocalFileSystem().open_input_stream({str(key)!r}).read().decode()\n"
        "except Exception as e:\n"
        "    __doc__ = 'nothing: ' + type(e).__name__\n"
        "def signals(candles, **_):\n"
        "    return candles['close'] * 0\n"
    )
    async with agent.client() as c:
        for tool in ("write_strategy", "write_indicator"):
            said = text_of(await c.call_tool(tool, {"name": "leak", "code": code}))
            assert "PRIVATE KEY" not in said and key.read_text()[40:80] not in said


async def test_links_planted_during_a_backtest_lead_nowhere(agent: Agent) -> None:
    """A strategy planted ``chart.png``/``result.json`` links in the backtest's folder, and
    the agent then wrote its result through them into bob's system prompt."""
    fill_lake(agent.cfg, days=3)
    bob = bob_prompt(agent.cfg)
    code = (
        "import os\n"
        "for name in ('chart.png', 'result.json', 'candles.parquet'):\n"
        "    try:\n"
        f"        os.symlink({str(bob)!r}, '/scratch/' + name)\n"
        "    except OSError:\n"
        "        pass\n"
        "PARAMS = {}\n"
        "def signals(candles, **_):\n"
        "    return (candles['close'] > candles['close'].shift(1)) * 1.0\n"
    )
    agent.person.workspace.write("strategies", "planter", code)
    async with agent.client() as c:
        result = await c.call_tool("run_backtest", {"strategy": "planter", **BACKTEST})
        assert bob.read_text() == "bob's own instructions"
        if not result.is_error:
            run = RUN_BACKTEST.parse(result.structured_content)
            assert isinstance(run, BacktestRun) and run.chart is not None, run
            blob = (await c.read_resource(run.chart)).contents[0]
            assert isinstance(blob, BlobResourceContents), blob
            png = base64.b64decode(blob.blob)
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            folder = agent.person.backtests / run.id
            assert not any(p.is_symlink() for p in folder.iterdir())


async def test_run_python_inputs_are_fresh_and_outside_its_reach(agent: Agent) -> None:
    """The agent wrote candle files into the sandbox's scratch, where a link planted by an
    earlier run sent the write anywhere the agent could write."""
    fill_lake(agent.cfg, days=3)
    bob = bob_prompt(agent.cfg)
    plant = f"import os\nos.symlink({str(bob)!r}, '/scratch/candles-0.parquet')\nresult = 1"
    load = [BACKTEST | {"timeframe": "1h"}]
    async with agent.client() as c:
        await c.call_tool("run_python", {"code": plant})
        out = await c.call_tool(
            "run_python", {"code": "result = len(candles('BINANCE:BTC/USDT', '1h'))", "load": load}
        )
        assert not out.is_error, text_of(out)
        assert RUN_PYTHON.parse(out.structured_content).result == 48
        written = await c.call_tool(
            "run_python", {"code": "open('/inputs/candles-0.parquet', 'wb').write(b'x')"}
        )
        assert written.is_error
    assert bob.read_text() == "bob's own instructions"
    assert not any(agent.person.run_inputs.iterdir())  # each run's inputs are gone after it


async def test_a_link_in_an_old_backtest_folder_is_not_followed(agent: Agent) -> None:
    """Folders written before this sandbox may still hold links the old one planted."""
    key = secret_of(agent.cfg)
    old = agent.person.backtests / "abc123"
    old.mkdir(parents=True)
    os.symlink(key, old / "chart.png")
    (agent.person.backtests / "def456").symlink_to(key.parent)
    async with agent.client() as c:
        for run_id in ("abc123", "def456"):
            with pytest.raises(MCPError) as refused:
                await c.read_resource(f"backtest://{run_id}/chart.png")
            assert "PRIVATE KEY" not in str(refused.value)


async def test_the_agent_refuses_a_token_that_never_expires(agent: Agent) -> None:
    """A personal token without an expiry (``dexorder agent`` once printed such) was
    accepted by the agent for ever, even after the gateway stopped accepting it."""
    claims = {"sub": "alice", "kind": "pat", "jti": "x", "iat": 0, "aud": "dexorder-agent"}
    private_pem = token_keys(agent.cfg).private_pem
    assert private_pem is not None  # the agent's home holds its key
    forever = jwt.encode(claims, private_pem, algorithm="EdDSA")
    async with httpx2.AsyncClient() as http:
        r = await http.post(agent.url, json={}, headers={"Authorization": f"Bearer {forever}"})
    assert r.status_code == 401 and "exp" in r.json()["error"]
