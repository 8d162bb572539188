"""The offline model: plain requests become the tool calls a model would make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.harness.confirmations import is_confirmation, is_refusal
from gateway.harness.model import Message, ToolSpec
from gateway.harness.offline import LABEL, OfflineModel, describe, plan
from gateway.harness.router import complexity

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "tool", "args"),
    [
        ("price of BTC", "get_price", {"ticker": "BINANCE:BTC/USDT"}),
        ("what's the ETH price?", "get_price", {"ticker": "BINANCE:ETH/USDT"}),
        ("list my strategies", "list_strategies", {}),
        ("show my indicators", "list_indicators", {}),
        ("show my positions", "get_positions", {}),
        ("what alerts do I have", "list_alerts", {}),
        ("show my backtests", "list_backtests", {}),
        ("my earlier backtests of sma_cross", "list_backtests", {"strategy": "sma_cross"}),
        (
            "backtest sma_cross on 1h since January",
            "run_backtest",
            {
                "strategy": "sma_cross",
                "ticker": "BINANCE:BTC/USDT",
                "timeframe": "1h",
                "start": "2026-01-01",
                "end": "2026-11-25T12:00",
            },
        ),
        (
            "backtest rsi_reversion on ETH 4h from 2024-01-01 to 2024-03-01",
            "run_backtest",
            {
                "strategy": "rsi_reversion",
                "ticker": "BINANCE:ETH/USDT",
                "timeframe": "4h",
                "start": "2024-01-01",
                "end": "2024-03-01",
            },
        ),
        (
            "set an alert at 70k",
            "set_alert",
            {"ticker": "BINANCE:BTC/USDT", "condition": "above", "price": 70_000.0},
        ),
        (
            "set an alert when ETH drops below 2,500",
            "set_alert",
            {"ticker": "BINANCE:ETH/USDT", "condition": "below", "price": 2_500.0},
        ),
        (
            "buy 0.1 BTC on paper",
            "execute_trade",
            {
                "ticker": "BINANCE:BTC/USDT",
                "side": "buy",
                "quantity": 0.1,
                "order_type": "market",
                "mode": "paper",
            },
        ),
        (
            "sell 2 ETH/USDT limit 4000",
            "execute_trade",
            {
                "ticker": "BINANCE:ETH/USDT",
                "side": "sell",
                "quantity": 2.0,
                "order_type": "limit",
                "limit_price": 4000.0,
                "mode": "paper",
            },
        ),
        ("show strategy sma_cross", "read_strategy", {"name": "sma_cross"}),
        ("confirm 123456", "confirm_trade", {"code": "123456"}),
        ("code: 654321", "confirm_trade", {"code": "654321"}),
        (
            "Remember that I never trade on Fridays",
            "remember",
            {"fact": "I never trade on Fridays"},
        ),
    ],
)
def test_plain_requests_map_to_tool_calls(text: str, tool: str, args: dict[str, object]) -> None:
    assert plan(text, NOW) == (tool, args)


def test_since_a_later_month_means_last_year() -> None:
    found = plan("backtest sma_cross on 1d since December", NOW)
    assert found is not None and found[1]["start"] == "2025-12-01"


def test_what_it_does_not_understand_maps_to_nothing() -> None:
    assert plan("tell me a joke", NOW) is None


async def test_every_reply_is_labelled_and_unknown_requests_get_help() -> None:
    model = OfflineModel()
    tools = [ToolSpec("get_price", "", {})]
    reply = await model.reply("", [{"role": "user", "content": "tell me a joke"}], tools)
    assert reply.text.startswith(LABEL) and "price of BTC" in reply.text
    assert not reply.tool_calls
    # a request for a tool the model was not given is not attempted
    reply = await model.reply("", [{"role": "user", "content": "list my strategies"}], tools)
    assert not reply.tool_calls


async def test_a_tool_round_trip_ends_in_a_labelled_description() -> None:
    model = OfflineModel()
    tools = [ToolSpec("get_price", "", {})]
    messages: list[Message] = [{"role": "user", "content": "price of BTC"}]
    first = await model.reply("", messages, tools)
    (call,) = first.tool_calls
    assert call.name == "get_price"
    messages += [
        first.as_message(),
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": '{"ticker": "BINANCE:BTC/USDT", "last": 64123.5}',
                }
            ],
        },
    ]
    streamed: list[str] = []

    async def on_text(t: str) -> None:
        streamed.append(t)

    second = await model.reply("", messages, tools, on_text)
    assert second.text == f"{LABEL} BINANCE:BTC/USDT last traded at 64,123.50."
    assert "".join(streamed) == second.text and len(streamed) > 3


def test_descriptions_of_results() -> None:
    assert "no strategies" in describe("list_strategies", {"strategies": []})
    sweep = {
        "id": "abc123",
        "strategy": "sma_cross",
        "ticker": "BINANCE:BTC/USDT",
        "timeframe": "1h",
        "candles": 700,
        "sweep": [{"params": {"fast": 5}, "sharpe": 1.5, "total_return": 0.2}],
        "rank_by": "sharpe",
        "combinations": 3,
    }
    assert "best by sharpe: {'fast': 5}" in describe("run_backtest", sweep)
    kept = {
        "runs": [
            {
                "id": "abc123",
                "strategy": "sma_cross",
                "ticker": "BINANCE:BTC/USDT",
                "timeframe": "1h",
                "start": "2024-01-01 00:00",
                "end": "2024-02-01 00:00",
                "ran_at": 1_764_000_000_000,
                "candles": 744,
                "params": {"fast": 10},
                "figures": {"total_return": 0.0412, "sharpe": 1.25, "trades": 7},
            }
        ],
        "more": 3,
        "skipped": 1,
    }
    assert describe("list_backtests", kept) == (
        "Your backtests, newest first:\n- sma_cross on BINANCE:BTC/USDT 1h, 2024-01-01 00:00 "
        "to 2024-02-01 00:00 (744 candles; fast=10), run abc123 at 2025-11-24 16:00 UTC: "
        "total_return 0.0412, sharpe 1.25, trades 7\n…and 3 older.\n"
        "(1 kept results could not be read)"
    )
    assert describe("list_backtests", {"runs": []}) == "You have no backtests kept yet."


def test_confirmations_and_refusals() -> None:
    for yes in ("yes", "Yes!", "confirm", "ok", "go ahead"):
        assert is_confirmation(yes)
    for other in ("yes but smaller", "no", "buy 1 BTC"):
        assert not is_confirmation(other)
    assert is_refusal("no") and is_refusal("Cancel.") and not is_refusal("no idea")


def test_complexity() -> None:
    assert complexity("price of BTC") == "simple"
    assert complexity("write a strategy that buys dips") == "complex"
