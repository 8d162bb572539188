"""The ingestor: exchange trades through CCXT into Kafka ``market.ticks``.

One ingestor serves one exchange. It streams the configured tickers it owns
(see :func:`services.ingestor.trades.owns`) and any ticker asked for on the
relay's work queue (topic ``EXCHANGE:``). Trades come from the exchange's
WebSocket where CCXT has one, from REST polling otherwise; after a reconnect
the gap is filled from REST (duplicates are removed downstream by trade id).
On Binance-protocol exchanges the spot trade stream is read without CCXT
(:mod:`services.ingestor.binance_stream`, ``native_trade_stream``): CCXT's
parse of each trade cost a core at 10,000 trades/s; CCXT still loads the
markets, backfills and fills gaps, there by trade id from ``historicalTrades``
(:mod:`services.ingestor.binance_gap`: ``fetch_trades`` reads aggregate trades, whose
ids are not the stream's).
A malformed payload is logged and counted, never fatal; so is a trade that
breaks the rules every consumer applies (:mod:`dexorder.market_validation`:
non-finite or non-positive price or amount, a time beyond the wall clock).
``/healthz`` reports, under ``feed``, when trades of each ticker last arrived
(:class:`dexorder.health.IngestorFeed`), for ``dexorder status``'s freshness check.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import ccxt
import msgspec
import structlog
import zmq
import zmq.asyncio
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from dexorder import kafka
from dexorder.exchanges import make_exchange
from dexorder.health import CounterReading, IngestorFeed, PartCounters
from dexorder.lake.query import lake_missing
from dexorder.lake.table import ohlc_table, open_catalog
from dexorder.market_validation import DEFAULT_MAX_SKEW_MS
from dexorder.markets import InvalidTicker, Ticker
from dexorder.relay_keys import RelayPublisher, connect_publisher, publisher
from dexorder.schemas import (
    BackfillDone,
    HistoryProgress,
    InvalidMessage,
    OhlcBatch,
    Tick,
    WorkItem,
    decode,
    encode,
)
from dexorder.topics import (
    MARKET_OHLC_BACKFILL,
    MARKET_TICKS,
    history_progress_topic,
    work_topic,
)
from services.ingestor.backfill import run_backfill
from services.ingestor.binance_gap import Fetch, GapFill, ccxt_fetch, fills_by_trade_id
from services.ingestor.binance_stream import connect, raw_messages, trade_stream_url
from services.ingestor.binance_trades import BINANCE_PROTOCOL, BinanceTradeDecoder, spot_symbols
from services.ingestor.partition import cached_partitioner
from services.ingestor.trades import MalformedTrade, TradeCursor, owns, tick_from_ccxt

if TYPE_CHECKING:
    from dexorder.config import ExchangeConfig, Settings

TICKS = Counter("ingestor_ticks_total", "Trades written to Kafka", ["exchange"])
MALFORMED = Counter(
    "ingestor_malformed_payloads_total", "Malformed exchange payloads", ["exchange"]
)
RECONNECTS = Counter("ingestor_reconnects_total", "Trade stream reconnects", ["exchange"])
ERRORS = Counter("ingestor_stream_errors_total", "Trade streams failed unexpectedly", ["exchange"])
WORK_ITEMS = Counter("ingestor_work_items_total", "Work items taken from the relay", ["exchange"])
BACKFILLS = Counter("ingestor_backfills_total", "Backfills sent to Kafka", ["exchange"])
STREAMS = Gauge("ingestor_streams", "Tickers being streamed", ["exchange"])

log = structlog.get_logger(part="ingestor")

_NETWORK_ERRORS = (
    ccxt.NetworkError,
    ccxt.ExchangeNotAvailable,
    ConnectionError,
    asyncio.TimeoutError,
)


@dataclass
class Backoff:
    """Exponential backoff with full jitter."""

    base: float = 0.25
    cap: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Ingestor:
    """Streams one exchange's trades into Kafka until :meth:`stop`."""

    exchange_name: str
    ccxt_id: str
    bootstrap: kafka.Bootstrap
    work_address: str
    symbols: list[str]
    emulator_url: str | None = None
    shard_index: int = 0
    shard_count: int = 1
    transport: str = "auto"
    #: Opens the lake's ``market.ohlc`` table, to backfill only what it lacks.
    lake: Callable[[], Any] | None = None
    backfill_timeout_s: float = 600.0
    poll_interval_s: float = 1.0
    #: how far beyond the wall clock a trade's time may be
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    #: CCXT keeps a ticker's trades in a ring of this size until ``watch_trades`` hands
    #: them over, and drains a whole socket read into it without yielding: a backlog
    #: larger than the ring loses the oldest trades silently (CCXT's default, 1000, lost
    #: trades at 10,000/s). About 1.2 KB a trade, kept per streamed ticker.
    trades_buffer: int = 10_000
    #: Read the spot trade stream without CCXT (Binance-protocol exchanges only);
    #: None: on for those (:data:`BINANCE_PROTOCOL`), off for others.
    native_trade_stream: bool | None = None
    _native: BinanceTradeDecoder | None = None
    #: set once the markets are loaded and the trade path chosen (work may come earlier)
    _markets_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _http: aiohttp.ClientSession | None = None
    #: ticker → wall-clock ms of the previous and the last batch of trades sent
    _trades_ms: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: figures for ``/healthz`` (this exchange's counters), counted from construction
    counters: PartCounters = field(init=False)
    _ticks_sent: Counter = field(init=False, repr=False)
    ready: bool = False
    _streams: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _backfills: set[asyncio.Task[None]] = field(default_factory=set)
    _lake_table: Any = None
    _progress_pub: Any = None
    #: Relay XSUB and this part's CURVE keys, where backfill progress is published
    #: (none: not published).
    relay_xsub: RelayPublisher | str | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _exchange: Any = None
    _producer: AIOKafkaProducer | None = None

    @classmethod
    def from_config(cls, cfg: Settings, ex: ExchangeConfig) -> Ingestor:
        """The ingestor of exchange section ``ex`` (one of ``cfg.exchanges``): its work
        from the relay, its trades into Kafka, backfills checked against the lake."""
        return cls(
            exchange_name=ex.name.upper(),
            ccxt_id=ex.ccxt_id,
            bootstrap=cfg.kafka.connection(),
            work_address=cfg.relay.work_address,
            relay_xsub=publisher(cfg, "ingestor"),
            symbols=ex.symbols,
            emulator_url=cfg.emulator_url if ex.emulated else None,
            transport=ex.transport,
            lake=lambda: ohlc_table(open_catalog(cfg), cfg.lake.namespace),
            poll_interval_s=ex.poll_interval_ms / 1000,
            shard_index=ex.shard_index,
            shard_count=ex.shard_count,
            max_skew_ms=cfg.market_data.max_clock_skew_ms,
            native_trade_stream=ex.native_trade_stream,
        )

    def __post_init__(self) -> None:
        mine = {"exchange": self.exchange_name}
        # looked up once: labels() costs more than inc() at 10,000 trades/s
        self._ticks_sent = TICKS.labels(self.exchange_name)
        self.counters = PartCounters(
            {
                name: CounterReading(counter, mine)
                for name, counter in (
                    ("ticks", TICKS),
                    ("malformed", MALFORMED),
                    ("reconnects", RECONNECTS),
                    ("errors", ERRORS),
                    ("work_items", WORK_ITEMS),
                    ("backfills", BACKFILLS),
                )
            }
        )

    def _malformed(self, payload: Any, exc: BaseException | None) -> None:
        MALFORMED.labels(self.exchange_name).inc()
        log.warning(
            "malformed exchange payload",
            payload=repr(payload)[:200],
            error=repr(exc) if exc else "not a JSON object",
        )

    def owns(self, ticker: str) -> bool:
        return owns(ticker, self.shard_index, self.shard_count)

    async def run(self) -> None:
        """Connect, stream, and take work until stopped."""
        self._exchange = make_exchange(
            self.ccxt_id,
            self.emulator_url,
            on_malformed=self._malformed,
            options={"tradesLimit": self.trades_buffer},
        )
        # A full batch makes send() wait until the one produce request in flight returns,
        # and the trade stream stalls behind it; 1 MiB holds seconds of a busy ticker.
        # No linger: the trades of one socket read are all appended before the sender
        # runs, so they go in one produce request anyway, and trades read while it is in
        # flight (one per broker) wait for its answer together; a linger only added its
        # own wait (and a timer wake-up) to every trade.
        self._producer = kafka.producer(
            self.bootstrap,
            linger_ms=0,
            acks=1,
            enable_idempotence=False,
            max_batch_size=1 << 20,
            partitioner=cached_partitioner,
        )
        await self._producer.start()
        if self.relay_xsub:
            self._progress_pub = zmq.asyncio.Context.instance().socket(zmq.PUB)
            self._progress_pub.setsockopt(zmq.LINGER, 0)
            connect_publisher(self._progress_pub, self.relay_xsub)
        work = asyncio.create_task(self._take_work())
        try:
            await self._load_markets()
            native = self.native_trade_stream
            if native is None:
                native = self.ccxt_id in BINANCE_PROTOCOL
            if native and self.ccxt_id in BINANCE_PROTOCOL:
                markets = spot_symbols(self._exchange.markets.values())
                self._native = BinanceTradeDecoder(self.exchange_name, markets, self.max_skew_ms)
                self._http = aiohttp.ClientSession()
            self._markets_ready.set()
            # The exchange's markets are a large object graph that lives as long as the
            # process (binance: thousands of markets); every full collection walked all
            # of it, stalling the trade stream 200+ ms at 10,000 trades/s. Frozen, the
            # collector leaves it out.
            gc.freeze()
            for symbol in self.symbols:
                self.want(f"{self.exchange_name}:{symbol}")
            self.ready = True
            await self._stop.wait()
        finally:
            self.ready = False
            work.cancel()
            tasks = [*self._streams.values(), *self._backfills]
            for task in tasks:
                task.cancel()
            await asyncio.gather(work, *tasks, return_exceptions=True)
            await self._exchange.close()
            if self._http is not None:
                await self._http.close()
            await self._producer.stop()
            if self._progress_pub is not None:
                self._progress_pub.close()

    def stop(self) -> None:
        self._stop.set()

    async def _load_markets(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._exchange.load_markets()
                return
            except _NETWORK_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning(
                    "exchange unreachable; retrying", error=str(exc)[:200], delay=round(delay, 2)
                )
                await asyncio.sleep(delay)

    def want(self, ticker: str) -> bool:
        """Start streaming ``ticker`` if this ingestor owns it; False if it is not ours."""
        if not self.owns(ticker):
            return False
        if ticker not in self._streams:
            self._streams[ticker] = asyncio.create_task(self._stream(Ticker.parse(ticker)))
            STREAMS.labels(self.exchange_name).set(len(self._streams))
            log.info("streaming", ticker=ticker)
        return True

    async def _take_work(self) -> None:
        ctx = zmq.asyncio.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, work_topic(self.exchange_name).encode())
        sub.connect(self.work_address)
        try:
            while True:
                frames = await sub.recv_multipart()
                try:
                    if len(frames) != 2:
                        raise InvalidMessage(f"expected 2 frames, got {len(frames)}")
                    item = decode(frames[1])
                    if not isinstance(item, WorkItem):
                        raise InvalidMessage(f"expected a WorkItem, got {type(item).__name__}")
                    ticker = str(Ticker.parse(item.ticker))
                except (InvalidMessage, InvalidTicker) as exc:
                    log.warning("bad work item", error=str(exc))
                    continue
                WORK_ITEMS.labels(self.exchange_name).inc()
                if item.kind == "realtime":
                    self.want(ticker)
                elif self.owns(ticker):
                    task = asyncio.create_task(self._backfill(item))
                    self._backfills.add(task)
                    task.add_done_callback(self._backfills.discard)
        finally:
            sub.close()

    async def _stream(self, ticker: Ticker) -> None:
        """Stream one ticker forever, reconnecting with backoff."""
        await self._markets_ready.wait()
        backoff = Backoff()
        cursor = TradeCursor()
        gap = False
        use_ws = self.transport == "websocket" or (
            self.transport == "auto" and bool(self._exchange.has.get("watchTrades"))
        )
        key = str(ticker).encode()
        url = trade_stream_url(self._exchange, ticker.symbol) if use_ws and self._native else None
        if url is not None:
            return await self._stream_native(ticker, url)
        # Binance's stream carries trade ids, its fetch_trades aggregate-trade ids: a gap
        # in a stream is filled by trade id there too (as on the native path)
        by_id = use_ws and fills_by_trade_id(self._exchange)
        fetch = ccxt_fetch(self._exchange, ticker.symbol) if by_id else None
        last_id: int | None = None
        while True:
            try:
                if gap:
                    # fill the gap the interruption may have left
                    if fetch is not None:
                        last_id = await self._fill_gap(ticker, key, cursor, fetch, last_id)
                    else:
                        trades = await self._exchange.fetch_trades(
                            ticker.symbol, since=cursor.last_ts
                        )
                        await self._send(key, cursor, trades)
                    gap = False
                if use_ws:
                    trades = await self._exchange.watch_trades(ticker.symbol)
                else:
                    await asyncio.sleep(self.poll_interval_s)
                    trades = await self._exchange.fetch_trades(ticker.symbol, since=cursor.last_ts)
                if by_id:
                    newest = max(
                        (n for n in (_trade_no(t.get("id")) for t in trades) if n is not None),
                        default=None,
                    )
                    if newest is not None and (last_id is None or newest > last_id):
                        last_id = newest
                await self._send(key, cursor, trades)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except ccxt.BadSymbol as exc:
                log.error(
                    "exchange does not list ticker; not streaming it",
                    ticker=str(ticker),
                    error=str(exc)[:200],
                )
                self._streams.pop(str(ticker), None)
                return
            except (*_NETWORK_ERRORS, ccxt.ExchangeError) as exc:
                await self._interrupted(ticker, exc, backoff, cursor)
                gap = True
            except Exception:  # never let one ticker's stream end silently
                ERRORS.labels(self.exchange_name).inc()
                log.exception("trade stream failed; retrying", ticker=str(ticker))
                await asyncio.sleep(backoff.next_delay())
                gap = True

    async def _interrupted(
        self, ticker: Ticker, exc: BaseException, backoff: Backoff, cursor: TradeCursor
    ) -> None:
        """Count and log a lost connection, wait out the backoff, and make sure the gap
        fill after it has a start (a stream that never delivered starts the gap now)."""
        RECONNECTS.labels(self.exchange_name).inc()
        delay = backoff.next_delay()
        log.warning(
            "trade stream interrupted; reconnecting",
            ticker=str(ticker),
            error=str(exc)[:200],
            delay=round(delay, 2),
        )
        await asyncio.sleep(delay)
        if cursor.last_ts is None:
            cursor.last_ts = int(time.time() * 1000)

    async def _stream_native(self, ticker: Ticker, url: str) -> None:
        """Stream one ticker from the exchange's raw trade stream, reconnecting with backoff.

        After a reconnect the stream is opened first and the gap then filled from REST
        by trade id, from the last id sent (:mod:`services.ingestor.binance_gap`: the
        stream's own ids, where CCXT's ``fetch_trades`` gives aggregate-trade ids), so
        the trades made during the fill wait in the socket and none fall between the
        two; the cursor drops the ones both give.
        """
        assert self._native is not None and self._http is not None
        to_tick, malformed = self._native.tick, self._malformed
        backoff, cursor, gap = Backoff(), TradeCursor(), False
        #: the newest trade id sent: the next gap fill starts after it
        last_id: int | None = None
        key = str(ticker).encode()
        fetch = ccxt_fetch(self._exchange, ticker.symbol)
        while True:
            try:
                async with connect(self._http, url) as ws:
                    if gap:
                        last_id = await self._fill_gap(ticker, key, cursor, fetch, last_id)
                        gap = False
                    backoff.reset()
                    async for raw in raw_messages(ws):
                        try:
                            tick = to_tick(raw)
                        except MalformedTrade as exc:
                            malformed(raw, exc)
                            continue
                        trade_no = _trade_no(tick.trade_id)
                        if trade_no is not None and (last_id is None or trade_no > last_id):
                            last_id = trade_no
                        await self._send_ticks(key, cursor, [tick])
            except asyncio.CancelledError:
                raise
            except (*_NETWORK_ERRORS, aiohttp.ClientError, ccxt.ExchangeError) as exc:
                await self._interrupted(ticker, exc, backoff, cursor)
                gap = True
            except Exception:  # never let one ticker's stream end silently
                ERRORS.labels(self.exchange_name).inc()
                log.exception("trade stream failed; retrying", ticker=str(ticker))
                await asyncio.sleep(backoff.next_delay())
                gap = True
                if cursor.last_ts is None:
                    cursor.last_ts = int(time.time() * 1000)

    async def _fill_gap(
        self, ticker: Ticker, key: bytes, cursor: TradeCursor, fetch: Fetch, last_id: int | None
    ) -> int | None:
        """Send the trades a native stream missed, page by page (a fill cut short by an
        error keeps what it sent); the newest trade id sent after it."""
        fill = GapFill(fetch)
        assert last_id is not None or cursor.last_ts is not None
        pages = fill.after(last_id) if last_id is not None else fill.since(cursor.last_ts or 0)
        async for trades in pages:
            await self._send(key, cursor, trades)
            newest = max(
                (n for n in (_trade_no(t["id"]) for t in trades) if n is not None), default=None
            )
            if newest is not None and (last_id is None or newest > last_id):
                last_id = newest
        if not fill.complete:
            log.warning(
                "trade gap longer than one fill reads; its start is left to the backfill",
                ticker=str(ticker),
            )
        return last_id

    async def _send(self, key: bytes, cursor: TradeCursor, trades: list[dict[str, Any]]) -> None:
        ticks = []
        for trade in trades:
            try:
                ticks.append(
                    tick_from_ccxt(self.exchange_name, trade, max_skew_ms=self.max_skew_ms)
                )
            except MalformedTrade as exc:
                self._malformed(trade.get("info", trade) if isinstance(trade, dict) else trade, exc)
        await self._send_ticks(key, cursor, ticks)

    async def _send_ticks(self, key: bytes, cursor: TradeCursor, ticks: list[Tick]) -> None:
        assert self._producer is not None
        fresh = cursor.fresh(ticks)
        if fresh:
            now = int(time.time() * 1000)
            ticker = key.decode()
            self._trades_ms[ticker] = (self._trades_ms.get(ticker, (0, 0))[1], now)
        sent = self._ticks_sent
        for tick in fresh:
            await self._producer.send(MARKET_TICKS, encode(tick), key=key)
            sent.inc()

    async def _backfill(self, item: WorkItem) -> None:
        log.info(
            "backfill",
            request_id=item.request_id,
            ticker=item.ticker,
            timeframe=item.timeframe,
            start=item.start,
            end=item.end,
        )
        done = await run_backfill(
            self._exchange,
            item,
            self._lake_missing,
            self._send_backfill,
            self._progress,
            self.backfill_timeout_s,
            self.max_skew_ms,
        )
        BACKFILLS.labels(self.exchange_name).inc()
        log.info(
            "backfill sent",
            request_id=done.request_id,
            fetched=done.fetched,
            gaps=len(done.gaps),
            error=done.error,
        )

    async def _lake_missing(
        self, ticker: str, tf: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        if self.lake is None:
            return [(start, end)]
        if self._lake_table is None:
            self._lake_table = await asyncio.to_thread(self.lake)
        table = self._lake_table
        await asyncio.to_thread(table.refresh)
        return await asyncio.to_thread(lake_missing, table, ticker, tf, start, end)

    async def _progress(self, request_id: str, fetched: int, total: int) -> None:
        if self._progress_pub is not None:
            msg = HistoryProgress(request_id=request_id, fetched=fetched, total=total)
            await self._progress_pub.send_multipart(
                [history_progress_topic(request_id).encode(), encode(msg)]
            )

    async def _send_backfill(self, msg: OhlcBatch | BackfillDone) -> None:
        assert self._producer is not None
        # keyed by ticker: a request's batches and its end marker stay in order
        await self._producer.send(MARKET_OHLC_BACKFILL, encode(msg), key=msg.ticker.encode())
        if isinstance(msg, BackfillDone):
            await self._producer.flush()

    def feed(self) -> dict[str, object]:
        """The ``feed`` of ``/healthz``: :class:`dexorder.health.IngestorFeed` as JSON."""
        feed: dict[str, object] = msgspec.to_builtins(IngestorFeed(dict(self._trades_ms)))
        return feed

    @property
    def streaming(self) -> list[str]:
        """The tickers being streamed."""
        return sorted(self._streams)


def _trade_no(trade_id: object) -> int | None:
    """A Binance trade id as a number (they increase with time); None if it is not one."""
    try:
        return int(str(trade_id))
    except ValueError:
        return None
