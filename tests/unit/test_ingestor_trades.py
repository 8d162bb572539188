"""Converting CCXT trades to ticks, and sharing tickers between ingestors."""

from __future__ import annotations

from typing import Any

import pytest

from services.ingestor.trades import MalformedTrade, owns, tick_from_ccxt


def ccxt_trade(**over: Any) -> dict[str, Any]:
    base = {
        "id": "12",
        "symbol": "BTC/USDT",
        "price": 100.5,
        "amount": 0.1,
        "timestamp": 1_700_000_000_000,
        "side": "buy",
    }
    return {**base, **over}


def test_valid_trade() -> None:
    tick = tick_from_ccxt("BINANCE", ccxt_trade())
    assert (tick.ticker, tick.trade_id, tick.price, tick.amount, tick.side) == (
        "BINANCE:BTC/USDT",
        "12",
        100.5,
        0.1,
        "buy",
    )


@pytest.mark.parametrize(
    "over",
    [
        {"id": None},
        {"price": None},
        {"price": -1.0},
        {"price": float("nan")},
        {"amount": 0},
        {"amount": "1"},
        {"timestamp": None},
        {"symbol": "BTCUSDT"},
    ],
)
def test_malformed_trades(over: dict[str, Any]) -> None:
    with pytest.raises(MalformedTrade):
        tick_from_ccxt("BINANCE", ccxt_trade(**over))


def test_missing_fields() -> None:
    with pytest.raises(MalformedTrade, match="missing field"):
        tick_from_ccxt("BINANCE", {"id": "1"})


def test_shards_partition_the_tickers() -> None:
    tickers = [f"BINANCE:T{i}/USDT" for i in range(200)]
    for n in (1, 2, 3):
        owners = [[i for i in range(n) if owns(t, i, n)] for t in tickers]
        assert all(len(o) == 1 for o in owners)  # every ticker exactly one owner
        if n > 1:
            assert len({o[0] for o in owners}) == n  # and every shard gets some


def test_cursor_skips_trades_already_sent() -> None:
    from dexorder.schemas import Tick
    from services.ingestor.trades import TradeCursor

    def t(i: str, ts: int) -> Tick:
        return Tick(exchange="B", symbol="A/B", trade_id=i, price=1, amount=1, ts=ts)

    cur = TradeCursor()
    assert [x.trade_id for x in cur.fresh([t("1", 10), t("2", 20), t("3", 20)])] == ["1", "2", "3"]
    # a poll "since 20" returns the boundary trades again, plus new ones
    assert [x.trade_id for x in cur.fresh([t("2", 20), t("3", 20), t("4", 20), t("5", 30)])] == [
        "4",
        "5",
    ]
    assert cur.fresh([t("1", 10)]) == []
