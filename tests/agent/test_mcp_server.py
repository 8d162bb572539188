"""The agent through a real MCP client session over streamable HTTP: auth, resources, tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from dexorder.config import Settings
from tests.agent.conftest import Agent, fill_lake

pytestmark = pytest.mark.integration

SMA_CROSS = '''"""Long while the fast SMA is above the slow one."""
import talib

PARAMS = {"fast": 10, "slow": 30, "size": 1.0}


def signals(candles, fast=10, slow=30, size=1.0):
    fast_ma = talib.SMA(candles["close"], timeperiod=fast)
    slow_ma = talib.SMA(candles["close"], timeperiod=slow)
    return (fast_ma > slow_ma) * size
'''

RSI = '''"""Relative strength index."""
import talib

PARAMS = {"period": 14}


def compute(candles, period=14):
    return talib.RSI(candles["close"], timeperiod=period)
'''


def data(result: Any) -> Any:
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


def error(result: Any) -> str:
    assert result.is_error, f"expected an error, got {result.content[0].text[:200]}"
    text: str = result.content[0].text
    return text


# --- auth -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer", 401),
        ("Basic YWxpY2U6cGFzcw==", 401),
        ("Bearer not-a-token", 401),
    ],
)
async def test_requests_without_a_valid_token_get_401(
    agent: Agent, header: str | None, status: int
) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx2.AsyncClient() as http:
        r = await http.post(
            agent.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers
        )
    assert r.status_code == status
    assert "error" in r.json() and r.headers["www-authenticate"].startswith("Bearer")


async def test_expired_revoked_and_foreign_tokens(agent: Agent) -> None:
    async with httpx2.AsyncClient() as http:

        async def status(token: str) -> int:
            r = await http.post(agent.url, json={}, headers={"Authorization": f"Bearer {token}"})
            return r.status_code

        assert await status(agent.token(ttl_s=-1)) == 401
        bob = await http.post(
            agent.url, json={}, headers={"Authorization": f"Bearer {agent.token('bob')}"}
        )
        assert bob.status_code == 403 and "another person" in bob.json()["error"]
        pat = agent.token(kind="pat")
        from dexorder.tokens import token_keys, verify_token

        jti = verify_token(token_keys(agent.cfg), pat).token_id
        (agent.person.state_dir / "revoked_tokens").write_text(jti + "\n")
        assert await status(pat) == 401
        health = await http.get(agent.url.replace("/mcp", "/healthz"))
        assert health.status_code == 200


async def test_a_foreign_token_cannot_open_a_session(agent: Agent) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the SDK wraps the 403 in a task group error
        async with agent.client(agent.token("bob")) as c:
            await c.list_tools()


# --- resources --------------------------------------------------------------


async def test_the_four_context_resources(agent: Agent) -> None:
    agent.person.documents.set_profile({"style": "swing", "risk_tolerance": "low"})
    agent.person.documents.set_instructions("Answer in one paragraph.")
    async with agent.client() as c:
        listed = {str(r.uri) for r in (await c.list_resources()).resources}
        assert {
            "context://user-profile",
            "context://conversation-summary",
            "context://workspace-state",
            "context://system-prompt",
        } <= listed

        async def read(uri: str) -> str:
            text: str = (await c.read_resource(uri)).contents[0].text  # type: ignore[union-attr]
            return text

        profile = json.loads(await read("context://user-profile"))
        assert (profile["user"], profile["style"], profile["risk_tolerance"]) == (
            "alice",
            "swing",
            "low",
        )
        assert await read("context://system-prompt") == "Answer in one paragraph."
        assert await read("context://conversation-summary") == ""
        state = json.loads(await read("context://workspace-state"))
        assert state["chart_ticker"] == "BINANCE:BTC/USDT" and state["alerts"] == []


# --- tools ------------------------------------------------------------------


async def test_every_tool_has_a_schema_and_a_description(agent: Agent) -> None:
    async with agent.client() as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    expected = {
        "list_strategies",
        "read_strategy",
        "write_strategy",
        "list_indicators",
        "read_indicator",
        "write_indicator",
        "run_backtest",
        "list_backtests",
        "get_watchlist",
        "set_watchlist",
        "set_alert",
        "list_alerts",
        "delete_alert",
        "run_python",
        "workspace_history",
        "revert_file",
    }
    assert expected <= set(tools)
    for t in tools.values():
        assert t.description and "\n" not in t.description.strip()
        assert t.input_schema["type"] == "object"


async def test_strategies_are_validated_saved_and_versioned(agent: Agent) -> None:
    async with agent.client() as c:
        saved = data(await c.call_tool("write_strategy", {"name": "my_cross", "code": SMA_CROSS}))
        assert saved["name"] == "my_cross" and len(saved["commit"]) == 40
        listed = data(await c.call_tool("list_strategies", {}))["strategies"]
        assert {
            "name": "my_cross",
            "description": "Long while the fast SMA is above the slow one.",
            "params": {"fast": 10, "slow": 30, "size": 1.0},  # its literal PARAMS, not run
        } in listed
        assert {s["name"] for s in listed} == {
            "my_cross",
            "rsi_reversion",
            "sma_cross",
        }  # + examples
        assert data(await c.call_tool("read_strategy", {"name": "my_cross"}))["code"] == SMA_CROSS

        broken = SMA_CROSS.replace("return (fast_ma > slow_ma) * size", "return fast_ma.nope")
        msg = error(await c.call_tool("write_strategy", {"name": "my_cross", "code": broken}))
        assert "not saved" in msg and "line 10" in msg and "AttributeError" in msg
        msg = error(await c.call_tool("write_strategy", {"name": "bad", "code": "def signals(:\n"}))
        assert "line 1: SyntaxError" in msg
        msg = error(
            await c.call_tool(
                "write_strategy", {"name": "short", "code": "def signals(c):\n    return [1, 0]\n"}
            )
        )
        assert "returned 2 values for 400 candles" in msg
        msg = error(await c.call_tool("write_strategy", {"name": "../../evil", "code": SMA_CROSS}))
        assert "invalid name" in msg
        assert data(await c.call_tool("read_strategy", {"name": "my_cross"}))["code"] == SMA_CROSS

        v2 = SMA_CROSS.replace('"fast": 10', '"fast": 12')
        data(await c.call_tool("write_strategy", {"name": "my_cross", "code": v2}))
        history = data(await c.call_tool("workspace_history", {"path": "strategies/my_cross.py"}))[
            "commits"
        ]
        assert [h["message"] for h in history] == [
            "Update strategy my_cross",
            "Add strategy my_cross",
        ]
        data(
            await c.call_tool(
                "revert_file", {"path": "strategies/my_cross.py", "commit": history[1]["commit"]}
            )
        )
        assert data(await c.call_tool("read_strategy", {"name": "my_cross"}))["code"] == SMA_CROSS
        assert "outside the workspace" in error(
            await c.call_tool(
                "revert_file", {"path": "../../state/alerts.json", "commit": history[1]["commit"]}
            )
        )


async def test_indicators_are_checked_for_shape(agent: Agent) -> None:
    async with agent.client() as c:
        saved = data(await c.call_tool("write_indicator", {"name": "rsi", "code": RSI}))
        assert saved["validation"]["lines"] == 1
        assert [
            i["name"] for i in data(await c.call_tool("list_indicators", {}))["indicators"]
        ] == ["rsi"]
        scalar = RSI.replace('return talib.RSI(candles["close"], timeperiod=period)', "return 3.0")
        assert "returned a single value" in error(
            await c.call_tool("write_indicator", {"name": "x", "code": scalar})
        )
        assert "must define compute" in error(
            await c.call_tool("write_indicator", {"name": "x", "code": "A = 1"})
        )


async def test_watchlist_and_alerts(agent: Agent) -> None:
    async with agent.client() as c:
        assert data(
            await c.call_tool(
                "set_watchlist", {"tickers": ["binance:sol/usdt", "BINANCE:BTC/USDT"]}
            )
        )["watchlist"] == [
            "BINANCE:SOL/USDT",
            "BINANCE:BTC/USDT",
        ]
        assert data(await c.call_tool("get_watchlist", {}))["watchlist"] == [
            "BINANCE:SOL/USDT",
            "BINANCE:BTC/USDT",
        ]
        assert "invalid ticker" in error(await c.call_tool("set_watchlist", {"tickers": ["BTC"]}))

        alert = data(
            await c.call_tool(
                "set_alert", {"ticker": "BINANCE:BTC/USDT", "condition": "above", "price": 70000}
            )
        )
        assert data(await c.call_tool("list_alerts", {}))["alerts"][0]["id"] == alert["id"]
        assert "greater than 0" in error(
            await c.call_tool(
                "set_alert", {"ticker": "BINANCE:BTC/USDT", "condition": "above", "price": -1}
            )
        )
        assert error(
            await c.call_tool(
                "set_alert", {"ticker": "BINANCE:BTC/USDT", "condition": "sideways", "price": 1}
            )
        )
        assert "no alert with id" in error(await c.call_tool("delete_alert", {"alert_id": "nope"}))
        data(await c.call_tool("delete_alert", {"alert_id": alert["id"]}))
        assert data(await c.call_tool("list_alerts", {}))["alerts"] == []
    # alerts survive a restart of the agent
    agent.person.alerts.add("BINANCE:ETH/USDT", "below", 1000)
    from agent.alerts import AlertBook

    assert [a.ticker for a in AlertBook(agent.person.state_dir / "alerts.json").all()] == [
        "BINANCE:ETH/USDT"
    ]


async def test_a_backtest_with_chart_and_a_sweep(agent: Agent) -> None:
    fill_lake(agent.cfg, days=30)
    async with agent.client() as c:
        data(await c.call_tool("write_strategy", {"name": "my_cross", "code": SMA_CROSS}))
        args = {
            "strategy": "my_cross",
            "ticker": "BINANCE:BTC/USDT",
            "timeframe": "1h",
            "start": "2024-01-01",
            "end": "2024-01-31",
        }
        one = data(await c.call_tool("run_backtest", args))
        assert one["candles"] == 720 and one["mode"] == "vectorised"
        for key in (
            "total_return",
            "cagr",
            "sharpe",
            "sortino",
            "max_drawdown",
            "win_rate",
            "profit_factor",
            "exposure",
        ):
            assert key in one["figures"]
        assert one["trades"] and one["equity_curve"][0][1] == 10_000
        again = data(await c.call_tool("run_backtest", args))
        assert (again["figures"], again["trades"]) == (
            one["figures"],
            one["trades"],
        )  # bit-identical

        chart = (await c.read_resource(one["chart"])).contents[0]
        import base64

        png = base64.b64decode(chart.blob)  # type: ignore[union-attr]
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

        sweep = data(
            await c.call_tool(
                "run_backtest", {**args, "params": {"fast": [5, 10], "slow": [20, 30, 40]}}
            )
        )
        assert sweep["combinations"] == 6
        sharpes = [r["sharpe"] for r in sweep["sweep"]]
        assert sharpes == sorted(sharpes, reverse=True)

        example = data(await c.call_tool("run_backtest", {**args, "strategy": "rsi_reversion"}))
        assert example["mode"] == "bar-by-bar"
        assert {t["reason"] for t in example["trades"]} <= {"signal", "stop-loss", "open at end"}

        assert "unknown parameter" in error(
            await c.call_tool("run_backtest", {**args, "params": {"nope": 1}})
        )
        assert "no strategy named" in error(
            await c.call_tool("run_backtest", {**args, "strategy": "ghost"})
        )
        assert "invalid date" in error(
            await c.call_tool("run_backtest", {**args, "start": "last week"})
        )
        assert "invalid timeframe" in error(
            await c.call_tool("run_backtest", {**args, "timeframe": "7m"})
        )


async def test_run_python_with_candles_and_its_limits(agent: Agent) -> None:
    fill_lake(agent.cfg, days=3)
    async with agent.client() as c:
        out = data(
            await c.call_tool(
                "run_python",
                {
                    "code": "df = candles('BINANCE:BTC/USDT', '1h')\nprint(len(df))\n"
                    "result = float(talib.SMA(df['close'], 5).iloc[-1])",
                    "load": [
                        {
                            "ticker": "BINANCE:BTC/USDT",
                            "timeframe": "1h",
                            "start": "2024-01-01",
                            "end": "2024-01-03",
                        }
                    ],
                },
            )
        )
        assert out["output"] == "48\n" and isinstance(out["result"], float)
        assert "network access is not allowed" in error(
            await c.call_tool("run_python", {"code": "import socket\nsocket.socket()"})
        )
        assert "needs ticker" in error(
            await c.call_tool("run_python", {"code": "1", "load": [{"ticker": "X"}]})
        )


async def test_limit_orders_can_be_cancelled_and_bad_orders_are_refused(agent: Agent) -> None:
    async with agent.client() as c:
        placed = data(
            await c.call_tool(
                "execute_trade",
                {
                    "ticker": "BINANCE:BTC/USDT",
                    "side": "buy",
                    "quantity": 0.01,
                    "order_type": "limit",
                    "limit_price": 1000,
                },
            )
        )
        assert placed["fill"] is None
        positions = data(await c.call_tool("get_positions", {}))
        assert [o["id"] for o in positions["open_orders"]] == [placed["order"]["id"]]
        assert positions["cash"] == 10_000 and positions["mode"] == "paper"
        cancelled = data(await c.call_tool("cancel_order", {"order_id": placed["order"]["id"]}))
        assert cancelled["status"] == "cancelled"
        assert data(await c.call_tool("get_positions", {}))["open_orders"] == []
        assert "no open order" in error(await c.call_tool("cancel_order", {"order_id": "nope"}))
        assert "not enough USDT" in error(
            await c.call_tool(
                "execute_trade",
                {
                    "ticker": "BINANCE:BTC/USDT",
                    "side": "buy",
                    "quantity": 5,
                    "order_type": "limit",
                    "limit_price": 50_000,
                },
            )
        )
        assert "greater than 0" in error(
            await c.call_tool(
                "execute_trade", {"ticker": "BINANCE:BTC/USDT", "side": "buy", "quantity": 0}
            )
        )
        assert "Input should be 'buy' or 'sell'" in error(
            await c.call_tool(
                "execute_trade", {"ticker": "BINANCE:BTC/USDT", "side": "short", "quantity": 1}
            )
        )


async def test_the_agent_speaks_mcp_over_stdio(cfg: Settings) -> None:
    import os
    import sys

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent", "--user", "carol", "--stdio"],
        env={**os.environ, "DEXORDER_HOME": str(cfg.home)},
    )
    async with Client(params) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"run_backtest", "execute_trade", "search_conversation"} <= names
        watchlist = data(await c.call_tool("get_watchlist", {}))
        assert watchlist["watchlist"] == ["BINANCE:BTC/USDT", "BINANCE:ETH/USDT"]
    assert (cfg.home / "agents" / "carol" / "workspace" / ".git").is_dir()


async def test_run_python_follows_the_configured_proc(tmp_path: Path) -> None:
    """agent.sandbox.proc reaches the sandbox (agent pods set none: knative/base/config)."""
    from tests.agent.conftest import serve_agent

    cfg = Settings(home=tmp_path / "home", agent={"sandbox": {"wall_s": 20, "proc": "none"}})
    async with serve_agent(cfg) as served, served.client() as c:
        code = "import os\nresult = [os.path.exists('/proc'), os.getuid()]"
        out = data(await c.call_tool("run_python", {"code": code}))
    assert out["result"] == [False, 65534]
