"""The market_summary skill's offline answer: each market's move and its alerts."""

from __future__ import annotations

from dexorder.contracts.agent_tools import Alert, AlertList, Watchlist
from dexorder.contracts.platform_tools import CandleSummary
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.skills.market_summary import SKILL, Ask


def candles(ticker: str, first: float, last: float) -> CandleSummary:
    return CandleSummary(
        ticker=ticker,
        timeframe="1h",
        count=168,
        start="2024-01-01T00:00",
        end="2024-01-08T00:00",
        first_close=first,
        last_close=last,
        high=max(first, last) * 1.01,
        low=min(first, last) * 0.99,
    )


def test_moves_are_ranked_and_alerts_shown_by_market() -> None:
    alert = Alert(id="a1", ticker="BINANCE:BTC/USDT", condition="above", price=70_000, created_at=0)
    found = [
        (
            "get_watchlist",
            ToolOutcome(Watchlist(watchlist=["BINANCE:BTC/USDT", "BINANCE:ETH/USDT"])),
        ),
        ("list_alerts", ToolOutcome(AlertList(alerts=[alert]))),
        ("get_candles", ToolOutcome(candles("BINANCE:BTC/USDT", 60_000, 66_000))),
        ("get_candles", ToolOutcome(candles("BINANCE:ETH/USDT", 3_000, 2_850))),
    ]
    summary = SKILL.offline(Ask(days=7, end="2024-01-08"), found)
    assert [round(t.change, 3) for t in summary.tickers] == [0.1, -0.05]
    assert summary.tickers[0].alerts == ["above 70,000"] and summary.tickers[1].alerts == []
    assert summary.overview == (
        "Over the last 7 days: BINANCE:BTC/USDT moved most up (+10.00%), "
        "BINANCE:ETH/USDT least (-5.00%)."
    )
    assert summary.period == "2024-01-01T00:00 to 2024-01-08T00:00"


def test_an_empty_watchlist_is_said() -> None:
    found = [("get_watchlist", ToolOutcome(Watchlist(watchlist=[])))]
    assert SKILL.offline(Ask(), found).overview == "Your watchlist is empty."
