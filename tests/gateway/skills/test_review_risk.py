"""The review_risk skill's offline answer: exposure, concentration, losing positions."""

from __future__ import annotations

from dexorder.contracts.agent_tools import Account, PositionView
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.skills.review_risk import SKILL, Ask


def position(ticker: str, qty: float, price: float, pnl: float) -> PositionView:
    return PositionView(
        ticker=ticker,
        quantity=qty,
        average_price=price,
        last_price=price,
        unrealised_pnl=pnl,
        realised_pnl=0,
    )


def test_a_concentrated_losing_position_is_warned_of() -> None:
    account = Account(
        mode="paper",
        cash=4_000,
        quote="USDT",
        equity=10_000,
        positions=[
            position("BINANCE:BTC/USDT", 0.1, 50_000, -250),
            position("X:ETH/USDT", 1, 1_000, 20),
        ],
        open_orders=[],
    )
    review = SKILL.offline(Ask(), [("get_positions", ToolOutcome(account))])
    assert [p.share_of_equity for p in review.positions] == [0.5, 0.1]
    assert review.warnings == [
        "BINANCE:BTC/USDT is 50% of equity (over 25%)",
        "BINANCE:BTC/USDT is losing 250.00",
    ]
    assert review.summary.startswith("Equity 10,000.00 USDT: 60% invested in 2 position(s)")
    assert "Warning: BINANCE:BTC/USDT is 50% of equity" in review.text()


def test_a_failed_gathering_is_said() -> None:
    review = SKILL.offline(Ask(), [("get_positions", ToolOutcome("agent away", is_error=True))])
    assert review.warnings == ["agent away"] and review.positions == []
