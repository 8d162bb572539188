"""Backfill: fetch the history a lake range is missing, page by page, through CCXT.

Only the ranges the lake lacks are fetched (a complete range is answered
without touching the exchange). Pages follow the exchange's page size and
CCXT's rate limiter; each page becomes an :class:`OhlcBatch`, and a final
:class:`BackfillDone` says how it went — including every failure, so the
requester is never left without an answer. Rows that break the candle rules
(:func:`dexorder.market_validation.ohlc_row_problem`: non-finite, non-positive,
inconsistent, in the future) are not sent; their times count as gaps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt
import structlog

from dexorder.lake.ranges import missing_ranges
from dexorder.market_validation import DEFAULT_MAX_SKEW_MS, ohlc_row_problem
from dexorder.markets import Ticker, Timeframe
from dexorder.schemas import BackfillDone, OhlcBatch, OhlcRow, WorkItem

log = structlog.get_logger(part="ingestor")

#: Asks the lake which ranges of ``(ticker, timeframe, start, end)`` it lacks.
MissingFn = Callable[[str, str, int, int], Awaitable[list[tuple[int, int]]]]
SendFn = Callable[[OhlcBatch | BackfillDone], Awaitable[None]]
#: Told (request id, candles fetched, candles expected) after every page.
ProgressFn = Callable[[str, int, int], Awaitable[None]]

PAGE_LIMIT = 1000
_RETRIES = 4


async def _fetch_page(exchange: Any, symbol: str, tf: str, since: int) -> list[list[Any]]:
    delay = 0.5
    for attempt in range(_RETRIES):
        try:
            page: list[list[Any]] = await exchange.fetch_ohlcv(
                symbol, tf, since=since, limit=PAGE_LIMIT
            )
            return page
        except ccxt.OperationFailed:  # network, rate limit, exchange down: worth a retry
            if attempt == _RETRIES - 1:
                raise
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _row(r: list[Any]) -> OhlcRow:
    # CCXT gives [time, open, high, low, close, volume]; the trade count is not unified
    return (int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]), 0)


async def run_backfill(
    exchange: Any,
    item: WorkItem,
    missing: MissingFn,
    send: SendFn,
    progress: ProgressFn,
    timeout_s: float,
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS,
) -> BackfillDone:
    """Fetch what the lake lacks of ``item``'s range, send it, and report."""
    assert item.request_id and item.timeframe and item.start is not None and item.end is not None
    done = BackfillDone(
        request_id=item.request_id,
        ticker=item.ticker,
        timeframe=item.timeframe,
        start=item.start,
        end=item.end,
    )
    try:
        await asyncio.wait_for(
            _fetch_all(exchange, item, done, missing, send, progress, max_skew_ms), timeout_s
        )
    except TimeoutError:
        done.error = f"timed out after {timeout_s:.0f}s"
    except ccxt.BadSymbol:
        done.error = f"unknown symbol: the exchange does not list {item.ticker}"
    except ccxt.OperationFailed as exc:
        done.error = f"exchange unavailable: {str(exc)[:200]}"
    except ccxt.ExchangeError as exc:
        done.error = f"exchange error: {str(exc)[:200]}"
    except Exception as exc:  # the requester must hear of every failure
        log.exception("backfill failed", request_id=item.request_id)
        done.error = f"backfill failed: {type(exc).__name__}: {str(exc)[:200]}"
    await send(done)
    return done


async def _fetch_all(
    exchange: Any,
    item: WorkItem,
    done: BackfillDone,
    missing: MissingFn,
    send: SendFn,
    progress: ProgressFn,
    max_skew_ms: int,
) -> None:
    assert item.timeframe and item.start is not None and item.end is not None
    ticker, tf = Ticker.parse(item.ticker), Timeframe.parse(item.timeframe)
    await exchange.load_markets()
    if ticker.symbol not in exchange.markets:
        raise ccxt.BadSymbol(ticker.symbol)
    ranges = await missing(str(ticker), tf.value, item.start, item.end)
    total = sum((b - a) // tf.ms for a, b in ranges)
    await progress(done.request_id, 0, total)
    for a, b in ranges:
        since, got = a, list[int]()
        while since < b:
            page = [
                r
                for r in await _fetch_page(exchange, ticker.symbol, tf.value, since)
                if a <= r[0] < b
            ]
            if not page:
                break
            rows = [_row(r) for r in page]
            now = int(time.time() * 1000)
            good = [row for row in rows if ohlc_row_problem(row, now, max_skew_ms) is None]
            if len(good) < len(rows):
                log.warning(
                    "exchange sent invalid candles; not stored",
                    request_id=done.request_id,
                    dropped=len(rows) - len(good),
                )
            if good:
                await send(
                    OhlcBatch(
                        request_id=done.request_id,
                        ticker=str(ticker),
                        timeframe=tf.value,
                        rows=good,
                    )
                )
            done.fetched += len(good)
            got.extend(r[0] for r in good)
            await progress(done.request_id, done.fetched, total)
            since = rows[-1][0] + tf.ms
        done.gaps.extend(missing_ranges(got, a, b, tf.ms))
