"""The paper broker's book: fills, fees, positions, PnL, and refusals."""

from __future__ import annotations

import pytest

from agent.broker.paper import OrderError, PaperBook

BTC = "BINANCE:BTC/USDT"


def book() -> PaperBook:
    b = PaperBook(cash=10_000, fee_rate=0.001, slippage=0.0)
    b.on_candle(BTC, 100, 101, 99, 100, 0)
    return b


def test_a_market_buy_then_sell_books_realised_pnl_and_fees() -> None:
    b = book()
    order, fill = b.place(BTC, "buy", 10)
    assert fill is not None and fill.price == 100 and fill.fee == pytest.approx(1.0)
    assert b.cash == pytest.approx(10_000 - 1000 - 1)
    b.on_candle(BTC, 110, 111, 109, 110, 60_000)
    s = b.summary()
    assert s["positions"][0]["unrealised_pnl"] == pytest.approx(100)  # type: ignore[index]
    assert s["equity"] == pytest.approx(10_000 - 1 + 100)
    _, sell = b.place(BTC, "sell", 10)
    assert sell is not None and sell.realised_pnl == pytest.approx(100)
    assert b.cash == pytest.approx(10_000 - 1 + 100 - 1.1)
    assert b.positions[BTC].quantity == 0 and order.status == "filled"


def test_limit_orders_fill_when_a_candle_reaches_them() -> None:
    b = book()
    order, fill = b.place(BTC, "buy", 1, "limit", 95)
    assert fill is None and b.open_orders() == [order]
    assert b.on_candle(BTC, 99, 100, 96, 97, 60_000) == []  # low 96: not yet
    (f,) = b.on_candle(BTC, 97, 98, 94, 95, 120_000)
    assert f.price == 95 and order.status == "filled"
    # a candle opening below the limit fills at its open (the better price)
    b.place(BTC, "buy", 1, "limit", 90)
    (g,) = b.on_candle(BTC, 85, 86, 84, 85, 180_000)
    assert g.price == 85


def test_slippage_moves_market_fills_against_the_trader() -> None:
    b = PaperBook(cash=1000, fee_rate=0, slippage=0.01)
    b.on_candle(BTC, 100, 100, 100, 100, 0)
    _, buy = b.place(BTC, "buy", 1)
    _, sell = b.place(BTC, "sell", 1)
    assert (buy.price, sell.price) == (pytest.approx(101), pytest.approx(99))  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((BTC, "buy", 1000), "not enough USDT"),
        ((BTC, "sell", 1), "holds 0"),
        (("BTC", "buy", 1), "invalid ticker"),
        ((BTC, "hold", 1), "invalid side"),
        ((BTC, "buy", -1), "invalid quantity"),
        ((BTC, "buy", 1, "limit"), "needs a limit_price"),
        ((BTC, "buy", 1, "stop"), "invalid order type"),
        (("BINANCE:ETH/USDT", "buy", 1), "no live price"),
    ],
)
def test_bad_orders_are_refused(args: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(OrderError, match=message):
        book().place(*args)


def test_the_book_survives_a_round_trip_to_json() -> None:
    b = book()
    b.place(BTC, "buy", 1)
    b.place(BTC, "buy", 1, "limit", 50)
    again = PaperBook.model_validate_json(b.to_json())
    assert again.summary() == b.summary() and len(again.fills) == 1
    again.cancel(again.open_orders()[0].id)
    assert again.open_orders() == []
    with pytest.raises(OrderError, match="no open order"):
        again.cancel("nope")


def test_stop_loss_and_take_profit_rest_and_fill_at_their_prices() -> None:
    b = book()
    b.place(BTC, "buy", 10)  # a position to protect
    stop, _ = b.place(BTC, "sell", 5, "stop_loss", 90)
    take, _ = b.place(BTC, "sell", 5, "take_profit", 120)
    assert (stop.status, take.status) == ("open", "open")
    with pytest.raises(OrderError, match="stop_loss order needs a limit_price"):
        b.place(BTC, "sell", 1, "stop_loss")
    with pytest.raises(OrderError, match="cannot sell"):
        b.place(BTC, "sell", 50, "take_profit", 150)
    # a candle reaching neither fills neither; one gapping down through the stop fills it
    # at the worse open (a market order once triggered)
    assert b.on_candle(BTC, 100, 110, 95, 100, 60_000) == []
    (fill,) = b.on_candle(BTC, 85, 88, 80, 86, 120_000)
    assert fill.order_id == stop.id and fill.price == 85
    # a take-profit fills at its level, or better when the candle opens beyond it
    (fill,) = b.on_candle(BTC, 125, 130, 124, 126, 180_000)
    assert fill.order_id == take.id and fill.price == 125
    assert b.positions[BTC].quantity == 0


def test_a_fired_rule_fills_its_order_once_and_candles_leave_it_to_the_platform() -> None:
    b = book()
    order, _ = b.place(BTC, "buy", 1, "limit", 90)
    # where the platform watches, a candle through the limit only marks the price
    assert b.on_candle(BTC, 89, 91, 80, 85, 60_000, fill_resting=False) == []
    assert order.status == "open" and b.last_prices[BTC] == 85
    fill = b.fill_triggered(order.id, 89.5, 61_000)
    assert fill is not None and (fill.price, fill.time) == (89.5, 61_000)
    assert b.fill_triggered(order.id, 89.5, 61_000) is None  # delivered again: no change
    assert len(b.fills) == 1 and b.positions[BTC].quantity == 1
    cancelled, _ = b.place(BTC, "buy", 1, "limit", 80)
    b.cancel(cancelled.id)
    assert b.fill_triggered(cancelled.id, 80, 62_000) is None
