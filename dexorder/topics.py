"""Names of Kafka topics and the relay topic format (the relay's addresses:
:class:`dexorder.config.RelayConfig`).

Relay topics are ``{EXCHANGE}:{BASE}/{QUOTE}|{kind}``, e.g.
``BINANCE:BTC/USDT|tick`` and ``BINANCE:BTC/USDT|ohlc:1m``; the ingestor work
queue uses the bare exchange prefix ``BINANCE:``.
"""

from __future__ import annotations

MARKET_TICKS = "market.ticks"
MARKET_CANDLES = "market.candles"
MARKET_OHLC_BACKFILL = "market.ohlc.backfill"

#: People's notifications (JSON ``{event_id, user, kind, payload}``), keyed by person.
NOTIFICATIONS = "notifications"
#: Backfill requests for the relay (JSON ``{ticker, timeframe, start, end}``).
BACKFILL_REQUESTS = "backfill.requests"
#: People's market rules (alerts, resting paper orders): compacted, keyed by rule id, values
#: :class:`~dexorder.contracts.rules.RuleRecord` JSON, tombstones on delete.
MARKET_RULES = "market.rules"
#: Fired order rules (:class:`~dexorder.contracts.rules.RuleFired` JSON), keyed by person:
#: the rule-delivery function applies them in the person's agent.
RULES_FIRED = "rules.fired"
#: Tool calls for people's agents, and their results (CloudEvents in binary mode).
TOOL_CALLS = "tool.calls"
TOOL_RESULTS = "tool.results"

#: Kafka topics and their partition counts; market records are keyed by ticker.
KAFKA_TOPICS: dict[str, int] = {
    MARKET_TICKS: 6,
    MARKET_CANDLES: 6,
    MARKET_OHLC_BACKFILL: 6,
    NOTIFICATIONS: 3,
    MARKET_RULES: 3,
    RULES_FIRED: 3,
    BACKFILL_REQUESTS: 3,
    TOOL_CALLS: 3,
    TOOL_RESULTS: 3,
}


def tick_topic(ticker: str) -> str:
    return f"{ticker}|tick"


def ohlc_topic(ticker: str, timeframe: str) -> str:
    return f"{ticker}|ohlc:{timeframe}"


def work_topic(exchange: str) -> str:
    return f"{exchange.upper()}:"


def history_ready_topic(request_id: str) -> str:
    return f"HISTORY_READY:{request_id}"


def history_progress_topic(request_id: str) -> str:
    return f"HISTORY_PROGRESS:{request_id}"


#: Topics kept compacted (latest value per key) rather than by time.
COMPACTED_TOPICS = frozenset({MARKET_RULES})


#: Fired rules on the relay fanout (live, informational): ``RULE:{tag}``, the tag a keyed
#: hash of the person, the message sealed (:mod:`dexorder.rule_sealing`). Never ``RULE:{user}``
#: in clear: the fanout is one for everyone, and subscriptions are prefixes.
RULE_FIRED_PREFIX = "RULE:"


def user_event_topic(user: str, kind: str) -> str:
    """A person's informational events on their agent's XPUB, e.g. ``EVENT:alice|backtest``."""
    return f"EVENT:{user}|{kind}"
