"""The trigger definitions: loaded strictly, rendered as KafkaSources valid against the CRD."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from dexorder.config import ConfigError
from dexorder.topics import KAFKA_TOPICS
from triggers.dispatcher import cloudevent_headers
from triggers.knative import broker_triggers, kafka_source
from triggers.spec import Trigger, load_triggers

CRD = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "crds" / "kafka-source.yaml"


def at(manifest: object, *path: str) -> object:
    """The value at ``path`` in a rendered manifest (None where a key is absent)."""
    value = manifest
    for key in path:
        assert isinstance(value, dict), (path, value)
        value = value.get(key)
    return value


def test_every_trigger_reads_a_platform_topic_and_names_a_hosted_function() -> None:
    from gateway.functions_host import FUNCTIONS

    for t in load_triggers():
        assert t.topic in KAFKA_TOPICS and t.function in FUNCTIONS
        assert t.dead_letter_topic == f"{t.topic}.dlq"


def test_a_bad_trigger_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("triggers:\n  - name: Bad Name\n    topic: x\n    function: y\n    retry: 3\n")
    with pytest.raises(ConfigError, match="name") as exc:
        load_triggers(bad)
    assert "retry" in str(exc.value)  # the unknown key is named too


def test_backoff_follows_knative() -> None:
    t = Trigger(name="a", topic="t", function="f", backoff_delay_s=0.5)
    assert [t.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    lin = t.model_copy(update={"backoff": "linear"})
    assert [lin.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 1.5]


@pytest.mark.skipif(not CRD.is_file(), reason="the Knative CRD schemas are not beside the repo")
def test_kafkasources_are_valid_against_the_crd_schema() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"][
        "openAPIV3Schema"
    ]
    for t in load_triggers():
        source = kafka_source(t)
        jsonschema.validate(source, schema)
        assert at(source, "spec", "topics") == [t.topic]
        # through the Broker (a reply that goes on) the function's Trigger has the delivery
        delivery = at(source, "spec", "delivery") or at(broker_triggers(t)[0], "spec", "delivery")
        assert at(delivery, "retry") == t.retries


def test_records_become_binary_cloudevents_as_kafkasource_sends_them() -> None:
    from aiokafka import ConsumerRecord

    record = ConsumerRecord(
        topic="notifications",
        partition=2,
        offset=41,
        timestamp=1_764_000_000_000,
        timestamp_type=0,
        key=b"alice",
        value=b"{}",
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=2,
        headers=[("ce-type", b"custom.type")],
    )
    h = cloudevent_headers(load_triggers()[0], record)
    assert h["ce-specversion"] == "1.0" and h["ce-id"] == "partition:2/offset:41"
    assert h["ce-key"] == "alice" and h["ce-type"] == "custom.type"  # the record's own wins
    assert (
        h["ce-source"]
        == "/apis/v1/namespaces/dexorder/kafkasources/notification-fanout#notifications"
    )
