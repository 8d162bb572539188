"""The market data rules every consumer applies (dexorder/market_validation.py), and the
pure parts built on them: the tick pipeline, a poisoned checkpoint mended, the freshness
rule of `dexorder status`, the lake's last line of defence, the ingestor's conversions."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec
import pyarrow as pa
import pytest

from dexorder.health import IngestorFeed, StreamFeed, stale_tickers
from dexorder.market_validation import (
    DEFAULT_MAX_SKEW_MS,
    candle_problem,
    ohlc_row_problem,
    tick_problem,
)
from dexorder.schemas import BackfillDone, Candle, OhlcBatch, Tick, WorkItem, encode
from services.ingestor.backfill import run_backfill
from services.ingestor.trades import MalformedTrade, tick_from_ccxt
from streaming.candles import MINUTE_MS, CandleBook
from streaming.lake_rows import PendingBatch, drop_non_finite
from streaming.pipeline import TickPipeline

NOW = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 30 * MINUTE_MS
YEAR_2100 = 4_102_444_800_000
NAN, INF = math.nan, math.inf


def tick(price: float = 100.0, amount: float = 1.0, ts: int = NOW, trade_id: str = "1") -> Tick:
    return Tick(
        exchange="BINANCE", symbol="BTC/USDT", trade_id=trade_id, price=price, amount=amount, ts=ts
    )


def candle(**over: Any) -> Candle:
    base: dict[str, Any] = {
        "exchange": "BINANCE",
        "symbol": "BTC/USDT",
        "timeframe": "1m",
        "open_time": NOW - MINUTE_MS,
        "open": 100.0,
        "high": 110.0,
        "low": 90.0,
        "close": 105.0,
        "volume": 3.0,
        "trades": 3,
        "closed": True,
    }
    return Candle(**{**base, **over})


# -- ticks -------------------------------------------------------------------


def test_a_good_tick_passes() -> None:
    assert tick_problem(tick(), NOW) is None
    assert tick_problem(tick(price=1e-12, amount=1e12), NOW) is None


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"price": NAN}, "price_not_finite"),
        ({"price": INF}, "price_not_finite"),
        ({"price": -INF}, "price_not_finite"),
        ({"price": 0.0}, "price_not_positive"),
        ({"price": -5.0}, "price_not_positive"),
        ({"amount": NAN}, "amount_not_finite"),
        ({"amount": INF}, "amount_not_finite"),
        ({"amount": 0.0}, "amount_not_positive"),
        ({"amount": -1.0}, "amount_not_positive"),
        ({"ts": 0}, "ts_not_positive"),
        ({"ts": -1}, "ts_not_positive"),
        ({"ts": YEAR_2100}, "ts_in_future"),
        ({"ts": NOW + DEFAULT_MAX_SKEW_MS + 1}, "ts_in_future"),
    ],
)
def test_bad_ticks_are_named(over: dict[str, Any], reason: str) -> None:
    assert tick_problem(tick(**over), NOW) == reason


def test_clock_skew_allowance_is_exact_and_configurable() -> None:
    assert tick_problem(tick(ts=NOW + DEFAULT_MAX_SKEW_MS), NOW) is None
    assert tick_problem(tick(ts=NOW + 1), NOW, max_skew_ms=0) == "ts_in_future"
    assert tick_problem(tick(ts=NOW + 60_000), NOW, max_skew_ms=60_000) is None


# -- candles -----------------------------------------------------------------


def test_a_good_candle_passes() -> None:
    assert candle_problem(candle(), NOW) is None
    assert candle_problem(candle(volume=0.0, trades=0), NOW) is None  # a quiet minute
    assert candle_problem(candle(open=90.0, close=110.0), NOW) is None  # at the extremes


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"open": NAN}, "open_not_finite"),
        ({"high": INF}, "high_not_finite"),
        ({"low": -INF}, "low_not_finite"),
        ({"close": NAN}, "close_not_finite"),
        ({"close": 0.0}, "close_not_positive"),
        ({"low": -1.0}, "low_not_positive"),
        ({"volume": NAN}, "volume_not_finite"),
        ({"volume": INF}, "volume_not_finite"),
        ({"volume": -0.5}, "volume_negative"),
        ({"trades": -1}, "trades_negative"),
        ({"high": 80.0}, "ohlc_inconsistent"),
        ({"open": 120.0}, "ohlc_inconsistent"),
        ({"close": 85.0}, "ohlc_inconsistent"),
        ({"open_time": -MINUTE_MS}, "open_time_negative"),
        ({"open_time": YEAR_2100}, "open_time_in_future"),
    ],
)
def test_bad_candles_are_named(over: dict[str, Any], reason: str) -> None:
    assert candle_problem(candle(**over), NOW) == reason


def test_backfill_rows_follow_the_candle_rules() -> None:
    assert ohlc_row_problem((NOW - MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 10.0, 0), NOW) is None
    assert ohlc_row_problem((NOW, 1.0, NAN, 0.5, 1.5, 10.0, 0), NOW) == "high_not_finite"
    assert ohlc_row_problem((YEAR_2100, 1.0, 2.0, 0.5, 1.5, 1.0, 0), NOW) == "open_time_in_future"


# -- the tick pipeline ---------------------------------------------------------


def test_pipeline_drops_and_counts_bad_ticks_and_keeps_folding() -> None:
    pipe = TickPipeline(allowed_lateness_ms=2_000)
    good = [tick(price=100.0 + i, ts=NOW + i, trade_id=str(i)) for i in range(3)]
    forged = [
        tick(ts=YEAR_2100, trade_id="f1"),
        tick(price=NAN, trade_id="f2"),
        tick(price=INF, trade_id="f3"),
        tick(price=0.0, trade_id="f4"),
        tick(amount=-1.0, trade_id="f5"),
    ]
    result = pipe.feed([encode(t) for t in [good[0], *forged, *good[1:]]], NOW)
    assert result.invalid == {
        "ts_in_future": 1,
        "price_not_finite": 2,
        "price_not_positive": 1,
        "amount_not_positive": 1,
    }
    assert sum(pipe.invalid.values()) == 5
    book = pipe.book.tickers["BINANCE:BTC/USDT"]
    assert book.max_ts == NOW + 2  # the year-2100 tick never moved the watermark
    # later real ticks still count, and close the minute
    later = NOW + MINUTE_MS + 5_000
    result = pipe.feed([encode(tick(price=50.0, ts=later, trade_id="9"))], later)
    assert result.touched == {"BINANCE:BTC/USDT"} and not result.invalid
    (closed,) = [c for c in result.closed if c.timeframe == "1m"]
    assert (closed.open, closed.high, closed.low, closed.close, closed.trades) == (
        100.0,
        102.0,
        100.0,
        102.0,
        3,
    )


# -- a checkpoint poisoned before validation existed ------------------------------


def poisoned_book() -> CandleBook:
    book = CandleBook(2_000)
    book.add_many([tick(price=100.0, ts=NOW - 2 * MINUTE_MS + 5, trade_id="a")], NOW)
    book.add_many([tick(price=101.0, ts=NOW - MINUTE_MS + 5, trade_id="b")], NOW)
    book.add_many([tick(price=102.0, ts=NOW + 5, trade_id="c")], NOW)
    book.drain()
    book.add_many([tick(price=1.0, ts=YEAR_2100, trade_id="forged")], NOW)  # no validation here
    return book


def test_restoring_a_poisoned_checkpoint_mends_the_ticker() -> None:
    # as it was: every real tick after the forged one is late, restart or not
    frozen = CandleBook(2_000)
    frozen.restore(poisoned_book().snapshot())
    assert not frozen.add(tick(price=103.0, ts=NOW + 10_000, trade_id="d"))

    restored = CandleBook(2_000)
    restored.restore(poisoned_book().snapshot())
    now = NOW + 10_000
    assert restored.forget_future(now, DEFAULT_MAX_SKEW_MS) == ["BINANCE:BTC/USDT"]
    state = restored.tickers["BINANCE:BTC/USDT"]
    assert state.max_ts <= now and state.watermark <= now
    assert all(m < now for m in state.minutes)
    assert restored.add(tick(price=103.0, ts=now, trade_id="d"))
    # the forged minute is gone: the next minutes close with real prices only
    restored.add(tick(price=104.0, ts=NOW + MINUTE_MS + 1_000, trade_id="e"))
    restored.add(tick(price=105.0, ts=NOW + 2 * MINUTE_MS + 5_000, trade_id="f"))
    closed = [c for c in restored.drain() if c.timeframe == "1m"]
    assert [(c.open_time, c.open, c.close, c.trades) for c in closed] == [
        (NOW + MINUTE_MS, 104.0, 104.0, 1)
    ]


def test_a_clean_checkpoint_is_left_alone() -> None:
    book = CandleBook(2_000)
    book.add_many([tick(ts=NOW - 1000, trade_id="a"), tick(ts=NOW, trade_id="b")], NOW)
    before = book.snapshot()
    assert book.forget_future(NOW, DEFAULT_MAX_SKEW_MS) == []
    assert book.snapshot() == before


# -- freshness -------------------------------------------------------------------


def feeds(trades: dict[str, tuple[int, int]], took: dict[str, int], started: int = 0) -> Any:
    return [IngestorFeed(trades_ms=trades)], StreamFeed(started_ms=started, last_tick_ms=took)


@pytest.mark.parametrize(
    ("trades", "took", "started", "stale"),
    [
        # ticks flowing: the stream took the last batch
        ({"B:X/Y": (NOW - 500, NOW)}, {"B:X/Y": NOW}, 0, {}),
        # the stream stopped taking ticks 30 s ago while trades kept coming
        ({"B:X/Y": (NOW - 500, NOW)}, {"B:X/Y": NOW - 30_000}, 0, {"B:X/Y": 30_000}),
        # the stream never took one
        ({"B:X/Y": (NOW - 500, NOW)}, {}, NOW - 60_000, {"B:X/Y": 60_000}),
        # a quiet market: no trades for long, nothing owed
        ({"B:X/Y": (NOW - 90_000, NOW - 80_000)}, {"B:X/Y": NOW - 80_000}, 0, {}),
        # the first batch after a quiet spell, still on its way
        ({"B:X/Y": (NOW - 90_000, NOW)}, {"B:X/Y": NOW - 90_000}, 0, {}),
        # a runner that just started is not blamed for what came before it
        ({"B:X/Y": (NOW - 500, NOW)}, {"B:X/Y": NOW - 30_000}, NOW - 1_000, {}),
        # within the allowance
        ({"B:X/Y": (NOW - 500, NOW)}, {"B:X/Y": NOW - 9_000}, 0, {}),
    ],
)
def test_stale_tickers(
    trades: dict[str, tuple[int, int]], took: dict[str, int], started: int, stale: dict[str, int]
) -> None:
    ingestors, stream = feeds(trades, took, started)
    assert stale_tickers(ingestors, stream, 10_000) == stale


def test_feeds_travel_as_json() -> None:
    feed = IngestorFeed(trades_ms={"B:X/Y": (1, 2)})
    assert msgspec.convert(msgspec.to_builtins(feed), IngestorFeed) == feed


# -- the lake's last line of defence -----------------------------------------------


def test_non_finite_rows_never_leave_a_batch() -> None:
    batch = PendingBatch()
    batch.add_candle(candle())
    batch.add_candle(candle(open_time=NOW - 2 * MINUTE_MS, close=NAN))
    batch.add_ohlc(
        OhlcBatch(
            request_id="r",
            ticker="BINANCE:BTC/USDT",
            timeframe="1h",
            rows=[(NOW - 3_600_000, 1.0, INF, 1.0, 1.0, 1.0, 0), (0, 1.0, 1.0, 1.0, 1.0, -INF, 0)],
        )
    )
    rows, dropped = drop_non_finite(batch.to_arrow())
    assert (rows.num_rows, dropped) == (1, 3)
    assert drop_non_finite(rows.slice(0, 0))[1] == 0
    for name in ("open", "high", "low", "close", "volume"):
        values = rows[name].to_pylist()
        assert all(math.isfinite(v) for v in values)
    assert isinstance(rows, pa.Table)


# -- the ingestor: the exchange is outside input too -----------------------------------


def ccxt_trade(**over: Any) -> dict[str, Any]:
    return {
        "id": "1",
        "symbol": "BTC/USDT",
        "price": 100.0,
        "amount": 1.0,
        "timestamp": NOW,
        **over,
    }


def test_ingestor_refuses_future_dated_trades() -> None:
    assert tick_from_ccxt("BINANCE", ccxt_trade(), now_ms=NOW).ts == NOW
    with pytest.raises(MalformedTrade, match="ts_in_future"):
        tick_from_ccxt("BINANCE", ccxt_trade(timestamp=YEAR_2100), now_ms=NOW)
    for bad in (INF, True, "1"):
        with pytest.raises(MalformedTrade):
            tick_from_ccxt("BINANCE", ccxt_trade(price=bad), now_ms=NOW)


class FakeExchange:
    """Just enough of a CCXT exchange for a backfill: one page of 1m candles."""

    markets: dict[str, object] = {"BTC/USDT": {}}

    def __init__(self, page: list[list[Any]]) -> None:
        self.page = page

    async def load_markets(self) -> None:
        return None

    async def fetch_ohlcv(self, symbol: str, tf: str, since: int, limit: int) -> list[list[Any]]:
        return [r for r in self.page if r[0] >= since]


def test_backfill_sends_only_valid_rows_and_reports_the_rest_as_gaps() -> None:
    start = NOW - 10 * MINUTE_MS
    page = [[start + i * MINUTE_MS, 1.0, 2.0, 0.5, 1.5, 3.0] for i in range(5)]
    page[1][2] = NAN  # high
    page[3][5] = -1.0  # volume
    sent: list[OhlcBatch | BackfillDone] = []

    async def send(msg: OhlcBatch | BackfillDone) -> None:
        sent.append(msg)

    async def missing(_t: str, _tf: str, a: int, b: int) -> list[tuple[int, int]]:
        return [(a, b)]

    async def progress(_r: str, _f: int, _t: int) -> None:
        return None

    item = WorkItem(
        kind="backfill",
        ticker="BINANCE:BTC/USDT",
        request_id="r1",
        timeframe="1m",
        start=start,
        end=start + 5 * MINUTE_MS,
    )
    done = asyncio.run(
        run_backfill(FakeExchange(page), item, missing, send, progress, 10.0, DEFAULT_MAX_SKEW_MS)
    )
    rows = [r for m in sent if isinstance(m, OhlcBatch) for r in m.rows]
    assert [r[0] for r in rows] == [start, start + 2 * MINUTE_MS, start + 4 * MINUTE_MS]
    assert done.error is None and done.fetched == 3
    assert done.gaps == [
        (start + MINUTE_MS, start + 2 * MINUTE_MS),
        (start + 3 * MINUTE_MS, start + 4 * MINUTE_MS),
    ]
