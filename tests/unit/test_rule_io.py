"""What the runner reads from ``market.rules`` and writes for a fired rule
(streaming/rule_io.py, its pure part)."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dexorder.contracts.events import Notification
from dexorder.contracts.rules import (
    OrderTrigger,
    PriceCross,
    Rule,
    RuleFired,
    RuleRecord,
    decode_fired,
    decode_record,
    encode_record,
)
from dexorder.record_signing import ForgedRecord, RecordKeys, signed_record, verify_record
from dexorder.topics import MARKET_RULES, NOTIFICATIONS, RULES_FIRED
from streaming.rule_io import fired_records, rule_problem


def keys() -> RecordKeys:
    key = Ed25519PrivateKey.generate()
    return RecordKeys(key.public_key(), key)


PLATFORM = keys()
ALERT = Rule(
    id="a-1",
    user="alice",
    ticker="BINANCE:BTC/USDT",
    condition=PriceCross(direction="above", level=100.0),
    created_at=1,
)
ORDER = Rule(
    id="o-1",
    user="bob",
    ticker="BINANCE:BTC/USDT",
    condition=OrderTrigger(order_id="o-1", order_type="limit", side="buy", quantity=1, level=90),
    created_at=1,
)


def test_an_alert_becomes_a_signed_notification_then_its_fired_record() -> None:
    fired = RuleFired(rule=ALERT, fired_at=5, price=101.0)
    first, back = fired_records(fired, PLATFORM)
    assert [r.topic for r in first] == [NOTIFICATIONS]
    note = first[0]
    assert note.key == b"alice"
    verify_record(PLATFORM, NOTIFICATIONS, note.value, note.headers)
    decoded = msgspec.json.decode(note.value, type=Notification)
    assert (decoded.event_id, decoded.kind, decoded.created_at) == ("rule:a-1", "alert", 5)
    assert decode_fired(msgspec.json.encode(decoded.payload)) == fired
    # signed for notifications, not for any other topic
    with pytest.raises(ForgedRecord):
        verify_record(PLATFORM, RULES_FIRED, note.value, note.headers)
    assert (back.topic, back.key) == (MARKET_RULES, b"a-1")
    verify_record(PLATFORM, MARKET_RULES, back.value, back.headers)
    assert decode_record(back.value) == RuleRecord(rule=ALERT, fired=fired)


def test_an_order_also_goes_to_rules_fired() -> None:
    fired = RuleFired(rule=ORDER, fired_at=5, price=89.0, fill_price=89.0)
    first, _ = fired_records(fired, PLATFORM)
    assert [r.topic for r in first] == [NOTIFICATIONS, RULES_FIRED]
    order = first[1]
    assert order.key == b"bob" and decode_fired(order.value) == fired
    verify_record(PLATFORM, RULES_FIRED, order.value, order.headers)
    assert msgspec.json.decode(first[0].value, type=Notification).kind == "order_triggered"


def test_market_rules_records_are_checked() -> None:
    value = encode_record(RuleRecord(rule=ALERT))
    signed = signed_record(PLATFORM, MARKET_RULES, value)
    assert rule_problem(PLATFORM, b"a-1", value, signed) == ("a-1", RuleRecord(rule=ALERT))
    tombstone = signed_record(PLATFORM, MARKET_RULES, b"")
    assert rule_problem(PLATFORM, b"a-1", None, tombstone) == ("a-1", None)
    assert rule_problem(PLATFORM, b"a-1", value, []) == "unsigned"
    assert rule_problem(PLATFORM, b"a-1", None, []) == "unsigned"  # a forged delete
    assert rule_problem(PLATFORM, b"a-1", value, signed_record(keys(), MARKET_RULES, value)) == (
        "unsigned"
    )
    assert rule_problem(PLATFORM, b"other", value, signed) == "key is not the rule id"
    assert rule_problem(PLATFORM, None, value, signed) == "no key"
    junk = b'{"rule": 1}'
    assert rule_problem(PLATFORM, b"a-1", junk, signed_record(PLATFORM, MARKET_RULES, junk)) == (
        "not a rule"
    )
    assert rule_problem(PLATFORM, b"\xff", None, tombstone) == "bad key"
