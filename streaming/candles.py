"""Candle folding and trade dedup: pure functions of the ticks, no I/O.

The local runner and the Flink job both drive a :class:`CandleBook`:

* Ticks are folded into 1-minute buckets; each bucket keeps the trade ids it
  has seen, so a trade delivered twice (two ingestors, a replay) counts once.
* Every ticker has an event-time *watermark*: the newest trade time seen minus
  the allowed lateness. A tick older than the watermark is **late**: it is
  counted in :attr:`CandleBook.late` and dropped, never mixed in silently.
* A bucket closes once the watermark passes its end. Closed 1m candles fold
  into the 5m 15m 1h 4h 1d candles, which close the same way, so volume and
  trade counts are conserved across timeframes by construction.
* Within a bucket, open and close are the earliest and latest trades by
  (trade time, trade id), not by arrival, so any arrival order within the
  allowed lateness gives the same candles.
* When a ticker goes quiet, :meth:`CandleBook.advance_idle` moves its watermark
  on by the wall-clock time elapsed since its newest tick arrived, so its last
  candles still close.

Minutes without trades produce no candle.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from dexorder.markets import ALL_TIMEFRAMES, Timeframe
from dexorder.schemas import Candle, Tick

MINUTE_MS = 60_000
_NEVER = 2**62
#: (name, length in ms) of the timeframes folded from closed 1m candles
_HIGHER = tuple((tf.value, tf.ms) for tf in ALL_TIMEFRAMES if tf is not Timeframe.M1)


def _order_key(ts: int, trade_id: str) -> tuple[int, int, str]:
    # Numeric ids of different lengths must order numerically.
    return (ts, len(trade_id), trade_id)


class Bucket(msgspec.Struct, gc=False):
    """The open 1m candle of one ticker and the trade ids folded into it."""

    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    first: tuple[int, int, str]
    last: tuple[int, int, str]
    ids: set[str]


class Rollup(msgspec.Struct, gc=False):
    """An open candle of a higher timeframe, folded from closed 1m candles."""

    open: float
    high: float
    low: float
    close: float
    volume: float
    trades: int
    first_minute: int
    last_minute: int


class TickerBook(msgspec.Struct):
    """Everything the book keeps for one ticker (checkpointed as is)."""

    exchange: str
    symbol: str
    max_ts: int = -(2**62)
    watermark: int = -(2**62)
    #: Wall-clock time (ms) the newest tick arrived, for idle advancing.
    seen_at: int = 0
    #: Earliest end of an open candle: nothing can close before the watermark gets there.
    next_close: int = _NEVER
    minutes: dict[int, Bucket] = {}
    rollups: dict[str, dict[int, Rollup]] = {}
    #: Open time of the newest closed candle already emitted, per timeframe.
    emitted: dict[str, int] = {}


class CandleBook:
    """Open candles of many tickers; feed ticks in, drain closed candles out."""

    def __init__(self, allowed_lateness_ms: int) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self.tickers: dict[str, TickerBook] = {}
        #: Closed candles not yet drained, in close order.
        self.closed: list[Candle] = []
        self.late = 0
        self.duplicates = 0

    # -- feeding -----------------------------------------------------------

    def add(self, tick: Tick) -> bool:
        """Fold one tick; return False when it was a duplicate or late."""
        key = f"{tick.exchange}:{tick.symbol}"
        book = self.tickers.get(key)
        if book is None:
            book = self.tickers[key] = TickerBook(tick.exchange, tick.symbol)
        ts = tick.ts
        if ts < book.watermark:
            self.late += 1
            return False
        minute = ts - ts % MINUTE_MS
        bucket = book.minutes.get(minute)
        price = tick.price
        order = _order_key(ts, tick.trade_id)
        if bucket is None:
            book.minutes[minute] = Bucket(
                price, price, price, price, tick.amount, 1, order, order, {tick.trade_id}
            )
            if minute + MINUTE_MS < book.next_close:
                book.next_close = minute + MINUTE_MS
        else:
            ids = bucket.ids
            if tick.trade_id in ids:
                self.duplicates += 1
                return False
            ids.add(tick.trade_id)
            if price > bucket.high:
                bucket.high = price
            elif price < bucket.low:
                bucket.low = price
            bucket.volume += tick.amount
            bucket.trades += 1
            if order < bucket.first:
                bucket.first = order
                bucket.open = price
            elif order > bucket.last:
                bucket.last = order
                bucket.close = price
        if ts > book.max_ts:
            book.max_ts = ts
            watermark = ts - self.allowed_lateness_ms
            if watermark > book.watermark:
                book.watermark = watermark
                if watermark >= book.next_close:
                    self._advance(book, watermark)
        return True

    def add_many(self, ticks: Iterable[Tick], now_ms: int) -> set[str]:
        """Fold ticks that arrived at wall-clock ``now_ms``; return the tickers they moved."""
        touched: set[str] = set()
        add = self.add
        for tick in ticks:
            if add(tick):
                touched.add(f"{tick.exchange}:{tick.symbol}")
        for key in touched:
            self.tickers[key].seen_at = now_ms
        return touched

    def advance_idle(self, now_ms: int) -> None:
        """Move quiet tickers' watermarks on by the wall-clock time since their newest tick."""
        for book in self.tickers.values():
            if book.seen_at and book.next_close < _NEVER:
                estimate = book.max_ts + (now_ms - book.seen_at) - self.allowed_lateness_ms
                if estimate > book.watermark:
                    self._advance(book, estimate)

    def advance(self, ticker: str, watermark: int) -> None:
        """Move one ticker's watermark to ``watermark`` (never backwards)."""
        book = self.tickers.get(ticker)
        if book is not None and watermark > book.watermark:
            self._advance(book, watermark)

    # -- closing -----------------------------------------------------------

    def _advance(self, book: TickerBook, watermark: int) -> None:
        book.watermark = watermark
        if watermark < book.next_close:
            return
        due = sorted(m for m in book.minutes if m + MINUTE_MS <= watermark)
        for minute in due:
            bucket = book.minutes.pop(minute)
            self._emit(book, "1m", minute, bucket)
            for tf, tf_ms in _HIGHER:
                self._roll(book, tf, tf_ms, minute, bucket)
        next_close = min(book.minutes, default=_NEVER - MINUTE_MS) + MINUTE_MS
        for tf, tf_ms in _HIGHER:
            rollups = book.rollups.get(tf)
            if rollups:
                for start in sorted(s for s in rollups if s + tf_ms <= watermark):
                    self._emit(book, tf, start, rollups.pop(start))
                if rollups:
                    next_close = min(next_close, min(rollups) + tf_ms)
        book.next_close = next_close

    @staticmethod
    def _roll(book: TickerBook, tf: str, tf_ms: int, minute: int, c: Bucket | Rollup) -> None:
        start = minute - minute % tf_ms
        rollups = book.rollups.setdefault(tf, {})
        r = rollups.get(start)
        if r is None:
            rollups[start] = Rollup(
                c.open, c.high, c.low, c.close, c.volume, c.trades, minute, minute
            )
            return
        r.high = max(r.high, c.high)
        r.low = min(r.low, c.low)
        r.volume += c.volume
        r.trades += c.trades
        if minute < r.first_minute:
            r.first_minute, r.open = minute, c.open
        if minute > r.last_minute:
            r.last_minute, r.close = minute, c.close

    def _emit(self, book: TickerBook, tf: str, start: int, c: Bucket | Rollup) -> None:
        if start <= book.emitted.get(tf, -1):
            return  # already emitted before a restart
        book.emitted[tf] = start
        self.closed.append(_candle(book, tf, start, c, closed=True))

    # -- reading -----------------------------------------------------------

    def drain(self) -> list[Candle]:
        """Return and forget the closed candles produced since the last drain."""
        out, self.closed = self.closed, []
        return out

    def open_candles(self, ticker: str) -> list[Candle]:
        """The current open candle of every timeframe of ``ticker`` (live view)."""
        book = self.tickers.get(ticker)
        if book is None or not (book.minutes or any(book.rollups.values())):
            return []
        out: list[Candle] = []
        minutes = sorted(book.minutes)
        if minutes:
            m = minutes[-1]
            out.append(_candle(book, Timeframe.M1.value, m, book.minutes[m], closed=False))
        for tf, tf_ms in _HIGHER:
            scratch = TickerBook(book.exchange, book.symbol)
            rollups = book.rollups.get(tf, {})
            if rollups:
                scratch.rollups[tf] = {k: msgspec.structs.replace(v) for k, v in rollups.items()}
            for m in minutes:
                self._roll(scratch, tf, tf_ms, m, book.minutes[m])
            current = scratch.rollups.get(tf)
            if current:
                start = max(current)
                out.append(_candle(book, tf, start, current[start], closed=False))
        return out

    def mark_emitted(self, ticker: str, timeframe: str, open_time: int) -> None:
        """Record a closed candle emitted before a restart, so it is not emitted again."""
        exchange, _, symbol = ticker.partition(":")
        book = self.tickers.get(ticker)
        if book is None:
            book = self.tickers[ticker] = TickerBook(exchange, symbol)
        if open_time > book.emitted.get(timeframe, -1):
            book.emitted[timeframe] = open_time

    def forget_future(self, now_ms: int, max_skew_ms: int) -> list[str]:
        """Drop what lies beyond ``now_ms + max_skew_ms``; return the tickers mended.

        Ticks are validated before they reach the book, but a checkpoint written
        before that was so can hold a forged far-future tick: its bucket, and a
        watermark in the future that counts every real tick after it as late.
        Restoring such a book as is would keep the ticker frozen across
        restarts, so the future state is dropped and the watermark goes back to
        no later than ``now_ms`` (candles it closed early stay emitted: they are
        already out, and the minutes folded into them are gone).
        """
        limit = now_ms + max_skew_ms
        mended: list[str] = []
        for key, book in self.tickers.items():
            if book.max_ts <= limit and book.watermark <= limit:
                continue
            book.minutes = {m: b for m, b in book.minutes.items() if b.last[0] <= limit}
            book.rollups = {
                tf: {s: r for s, r in rollups.items() if r.last_minute <= limit}
                for tf, rollups in book.rollups.items()
            }
            newest = max((b.last[0] for b in book.minutes.values()), default=now_ms)
            book.max_ts = min(newest, now_ms)
            book.watermark = min(book.watermark, book.max_ts - self.allowed_lateness_ms)
            next_close = min(book.minutes, default=_NEVER - MINUTE_MS) + MINUTE_MS
            for tf, tf_ms in _HIGHER:
                rollups = book.rollups.get(tf)
                if rollups:
                    next_close = min(next_close, min(rollups) + tf_ms)
            book.next_close = next_close
            mended.append(key)
        return mended

    # -- checkpoints -------------------------------------------------------

    def snapshot(self, tickers: Iterable[str] | None = None) -> bytes:
        """Serialize the state of ``tickers`` (all by default)."""
        keys = self.tickers.keys() if tickers is None else tickers
        state = {k: self.tickers[k] for k in keys if k in self.tickers}
        return msgspec.msgpack.encode(state)

    def restore(self, data: bytes) -> None:
        """Load tickers' state from :meth:`snapshot` output (replacing those tickers)."""
        self.tickers.update(msgspec.msgpack.decode(data, type=dict[str, TickerBook]))


def _candle(book: TickerBook, tf: str, start: int, c: Bucket | Rollup, *, closed: bool) -> Candle:
    return Candle(
        exchange=book.exchange,
        symbol=book.symbol,
        timeframe=tf,
        open_time=start,
        open=c.open,
        high=c.high,
        low=c.low,
        close=c.close,
        volume=c.volume,
        trades=c.trades,
        closed=closed,
    )
