"""Fired rules sealed for the relay fanout (dexorder/rule_sealing.py): they open with the
platform secret and only as they were sealed, on their own person's topic."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from dexorder import rule_sealing
from dexorder.config import ConfigError, Settings
from dexorder.contracts.rules import PriceCross, Rule, RuleFired, encode_fired
from dexorder.rule_sealing import (
    MIN_SECRET_CHARS,
    BadSealKey,
    BrokenSeal,
    RuleSealer,
    new_secret,
    rule_sealer,
)

SECRET = new_secret()


def fired(user: str = "alice", note: str = "sell the house") -> RuleFired:
    rule = Rule(
        id="a-1",
        user=user,
        ticker="BINANCE:BTC/USDT",
        condition=PriceCross(direction="above", level=70_123.5),
        created_at=1,
        note=note,
    )
    return RuleFired(rule=rule, fired_at=2, price=70_200.0)


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def test_a_sealed_rule_opens_as_it_was_and_names_nobody() -> None:
    sealer = RuleSealer.from_secret(SECRET)
    topic, payload = sealer.seal(fired())
    assert sealer.open(topic, payload) == fired()
    assert sealer.open(topic.encode(), payload) == fired()
    assert topic == sealer.topic_for("alice") and topic.startswith("RULE:")
    assert len(topic) == len("RULE:") + 22  # every tag the same length: no prefix of another
    for clear in (b"alice", b"BTC", b"70123.5", b"sell the house", b"a-1"):
        assert clear not in topic.encode() + payload
    # a fresh nonce each time: the same rule sealed twice is not the same bytes
    assert sealer.seal(fired())[1] != payload


def test_people_get_different_tags_and_other_secrets_other_tags() -> None:
    sealer = RuleSealer.from_secret(SECRET)
    assert sealer.topic_for("alice") != sealer.topic_for("bob")
    assert sealer.topic_for("alice") == RuleSealer.from_secret(SECRET).topic_for("alice")
    assert sealer.topic_for("alice") != RuleSealer.from_secret(new_secret()).topic_for("alice")


def test_any_changed_byte_of_the_payload_is_refused() -> None:
    sealer = RuleSealer.from_secret(SECRET)
    topic, payload = sealer.seal(fired())
    for at in range(len(payload)):
        with pytest.raises(BrokenSeal):
            sealer.open(topic, flip(payload, at))
    for cut in (payload[:-1], payload[:20], b"", encode_fired(fired())):
        with pytest.raises(BrokenSeal):
            sealer.open(topic, cut)


def test_a_sealed_rule_moved_to_another_topic_does_not_open() -> None:
    sealer = RuleSealer.from_secret(SECRET)
    topic, payload = sealer.seal(fired("alice"))
    with pytest.raises(BrokenSeal, match="does not open"):
        sealer.open(sealer.topic_for("bob"), payload)
    with pytest.raises(BrokenSeal, match="does not open"):
        sealer.open(flip(topic.encode(), len(topic) - 1), payload)
    with pytest.raises(BrokenSeal, match="not a fired-rule topic"):
        sealer.open("BINANCE:BTC/USDT|tick", payload)


def test_another_secret_opens_nothing() -> None:
    topic, payload = RuleSealer.from_secret(SECRET).seal(fired())
    with pytest.raises(BrokenSeal):
        RuleSealer.from_secret(new_secret()).open(topic, payload)


def test_the_secret_is_never_shown() -> None:
    sealer = RuleSealer.from_secret(SECRET)
    assert SECRET not in repr(sealer)


@pytest.mark.parametrize("secret", [None, "", "   ", "x" * (MIN_SECRET_CHARS - 1)])
def test_a_missing_or_weak_secret_is_refused(secret: str | None) -> None:
    with pytest.raises(BadSealKey, match=r"relay\.rule_seal_key"):
        RuleSealer.from_secret(secret)


def test_the_platform_settings_give_one_secret_or_a_clear_config_error(tmp_path: Path) -> None:
    # one machine: made on first use under state/relay/, the same for every part there
    first = rule_sealer(Settings(home=tmp_path))
    assert (tmp_path / "state" / "relay" / "rule_seal.key").stat().st_mode & 0o777 == 0o600
    topic, payload = first.seal(fired())
    assert rule_sealer(Settings(home=tmp_path)).open(topic, payload) == fired()
    # configured (the cluster): that secret, and no file
    configured = rule_sealer(Settings(home=tmp_path / "c", relay={"rule_seal_key": SECRET}))
    assert configured.topic_for("alice") == RuleSealer.from_secret(SECRET).topic_for("alice")
    assert not (tmp_path / "c" / "state").exists()
    for bad in ("", "short"):
        with pytest.raises(ConfigError, match=r"relay\.rule_seal_key"):
            rule_sealer(Settings(home=tmp_path, relay={"rule_seal_key": bad}))


def test_a_rule_sealed_under_the_wrong_persons_topic_is_refused() -> None:
    """Only a holder of the secret could do it (a platform bug), but it is still refused."""
    sealer = RuleSealer.from_secret(SECRET)
    topic = sealer.topic_for("bob")
    # seal alice's rule by hand under bob's topic, as a buggy sealer would
    nonce, plain = b"\x00" * 12, msgspec.json.encode(fired("alice"))
    body = sealer._aead.encrypt(nonce, plain, rule_sealing._AAD + topic.encode())
    with pytest.raises(BrokenSeal, match="another person's topic"):
        sealer.open(topic, b"\x01" + nonce + body)
