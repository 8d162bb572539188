"""Decoding Binance's raw trade events (the ingestor's fast path): hostile input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dexorder.config import ExchangeConfig
from services.ingestor.binance_stream import trade_stream_url
from services.ingestor.binance_trades import BinanceTradeDecoder, spot_symbols
from services.ingestor.trades import MalformedTrade

NOW = 1_790_000_000_000
MARKETS = [
    {"id": "BTCUSDT", "symbol": "BTC/USDT", "spot": True, "lowercaseId": "btcusdt"},
    {"id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "spot": False, "lowercaseId": "btcusdt"},
    {"id": "ETHBTC", "symbol": "ETH/BTC", "spot": True},
]
GOOD = (
    '{"e":"trade","E":1,"s":"BTCUSDT","t":42,"p":"50000.10000000","q":"0.00100000","T":%d,"m":%s}'
)


def _decoder() -> BinanceTradeDecoder:
    return BinanceTradeDecoder("BINANCE", spot_symbols(MARKETS), max_skew_ms=5_000)


def test_a_trade_event_becomes_a_tick_of_the_spot_market() -> None:
    tick = _decoder().tick(GOOD % (NOW, "true"), now_ms=NOW)
    assert (tick.symbol, tick.trade_id, tick.price, tick.amount, tick.ts, tick.side) == (
        "BTC/USDT",
        "42",
        50000.1,
        0.001,
        NOW,
        "sell",
    )
    assert _decoder().tick((GOOD % (NOW, "false")).encode(), now_ms=NOW).side == "buy"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2, 3]",
        "null",
        '{"result": null, "id": 1}',
        '{"e": "trade", "s": "BTCUSDT"}',
        '{"e":"aggTrade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1}',
        '{"e":"trade","s":"NOPE","t":1,"p":"1","q":"1","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":"","p":"1","q":"1","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"abc","q":"1","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"-1","q":"1","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"nan","q":"1","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"0","T":1}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":true}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":"x"}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":0}',
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":' + str(NOW + 60_000) + "}",
        '{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":"yes"}',
        b"\xff\xfe",
    ],
)
def test_a_bad_event_is_a_malformed_trade_never_another_error(raw: str | bytes) -> None:
    with pytest.raises(MalformedTrade):
        _decoder().tick(raw, now_ms=NOW)


def test_the_stream_url_is_the_exchange_objects_own() -> None:
    ex = SimpleNamespace(
        markets={m["symbol"]: m for m in MARKETS},
        urls={"api": {"ws": {"spot": "ws://127.0.0.1:9/ws"}}},
    )
    assert trade_stream_url(ex, "BTC/USDT") == "ws://127.0.0.1:9/ws/btcusdt@trade"
    assert trade_stream_url(ex, "ETH/BTC") == "ws://127.0.0.1:9/ws/ethbtc@trade"
    assert trade_stream_url(ex, "BTC/USDT:USDT") is None  # not spot: CCXT's watch_trades
    assert trade_stream_url(ex, "DOGE/USDT") is None


def test_the_native_stream_is_only_for_binance_protocol_exchanges() -> None:
    assert ExchangeConfig(ccxt_id="binanceus", native_trade_stream=True).native_trade_stream
    assert ExchangeConfig(ccxt_id="kraken").native_trade_stream is None
    with pytest.raises(ValueError, match="Binance-protocol"):
        ExchangeConfig(ccxt_id="kraken", native_trade_stream=True)
