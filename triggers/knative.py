"""The cluster form of ``triggers.yaml``: Knative Eventing objects, generated from it.

``python -m triggers.knative > knative/base/eventing.yaml`` writes them (a test checks the
file is current); ``python -m triggers kafkasources`` prints the KafkaSources alone.

A trigger without a reply is one KafkaSource: the topic → the function's Knative Service,
with its delivery (retries, backoff, the dead-letter KafkaSink on ``<topic>.dlq``).

A KafkaSource drops the function's reply, so a trigger whose reply must go on (the tool
proxy's results) runs through a Kafka Broker instead: the KafkaSource feeds the Broker, a
Trigger filtered on ``event_type`` calls the function (ordered, with the delivery), the
function's reply goes back into the Broker, and a second Trigger filtered on
``reply_type`` writes it to ``reply_topic`` through a KafkaSink. The function needs no
Kafka credential. The local dispatcher (``triggers/dispatcher.py``) does the same.

Every consumer has an explicit ``consumerGroup`` (``dexorder-trigger-<name>``, the
dispatcher's too, so the offsets of one are the other's), starts at the ``earliest``
offset (a new group misses nothing), and delivers in order per partition: records are
keyed by person or ticker, so one person's events keep their order.
"""

from __future__ import annotations

from dexorder.contracts.chat import JsonObject
from triggers.spec import Trigger

NAMESPACE = "dexorder-system"
BOOTSTRAP = "kafka-kafka-bootstrap.kafka.svc:9092"
#: The Secret holding the KafkaSources' and KafkaSinks' SASL/TLS settings (principal
#: ``dexorder-triggers``, knative/README.md); its keys are Knative's.
KAFKA_AUTH_SECRET = "dexorder-kafka-triggers"
#: The Broker of the triggers whose replies go on.
BROKER = "dexorder-replies"
#: The Kafka Broker's settings (topic partitions, bootstrap): knative-eventing's own.
BROKER_CONFIG = "kafka-broker-config"

_SERVICE = {"apiVersion": "serving.knative.dev/v1", "kind": "Service"}
_SINK = {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink"}
_BROKER = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker"}


def _iso_seconds(seconds: float) -> str:
    return f"PT{seconds:g}S"


def sink_name(topic: str) -> str:
    """The KafkaSink writing to ``topic`` (``notifications.dlq`` → ``notifications-dlq``)."""
    return topic.replace(".", "-").replace("_", "-")


def consumer_group(trigger: Trigger) -> str:
    return f"dexorder-trigger-{trigger.name}"


def _net() -> JsonObject:
    def ref(key: str) -> JsonObject:
        return {"secretKeyRef": {"name": KAFKA_AUTH_SECRET, "key": key}}

    return {
        "sasl": {
            "enable": True,
            "type": ref("sasl.mechanism"),
            "user": ref("user"),
            "password": ref("password"),
        },
        "tls": {"enable": True, "caCert": ref("ca.crt")},
    }


def delivery(trigger: Trigger) -> JsonObject:
    """Retries, backoff and the dead-letter sink, as ``triggers.yaml`` says."""
    out: JsonObject = {
        "retry": trigger.retries,
        "backoffPolicy": trigger.backoff,
        "backoffDelay": _iso_seconds(trigger.backoff_delay_s),
    }
    if trigger.dead_letter_topic:
        out["deadLetterSink"] = {"ref": {**_SINK, "name": sink_name(trigger.dead_letter_topic)}}
    return out


def kafka_source(
    trigger: Trigger, namespace: str = NAMESPACE, bootstrap: str = BOOTSTRAP
) -> JsonObject:
    """The KafkaSource reading ``trigger.topic``: to the function, or to the Broker when
    the function's reply must go on."""
    to_broker = trigger.reply_topic is not None
    spec: JsonObject = {
        "consumerGroup": consumer_group(trigger),
        "bootstrapServers": [bootstrap],
        "topics": [trigger.topic],
        "initialOffset": "earliest",
        "ordering": "ordered",
        "net": _net(),
        "sink": {"ref": {**(_BROKER if to_broker else _SERVICE), "name": _target(trigger)}},
    }
    if not to_broker:  # through the Broker, the function's Trigger carries the delivery
        spec["delivery"] = delivery(trigger)
    return {
        "apiVersion": "sources.knative.dev/v1beta1",
        "kind": "KafkaSource",
        "metadata": {"name": trigger.name, "namespace": namespace, "labels": _labels()},
        "spec": spec,
    }


def _target(trigger: Trigger) -> str:
    return BROKER if trigger.reply_topic else trigger.function


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": "dexorder", "dexorder.io/role": "eventing"}


def kafka_sink(topic: str, namespace: str = NAMESPACE, bootstrap: str = BOOTSTRAP) -> JsonObject:
    """A KafkaSink producing to ``topic`` (binary-mode CloudEvents, Kafka's own headers)."""
    return {
        **_SINK,
        "metadata": {"name": sink_name(topic), "namespace": namespace, "labels": _labels()},
        "spec": {
            "topic": topic,
            "bootstrapServers": [bootstrap],
            "contentMode": "binary",
            "auth": {"secret": {"ref": {"name": KAFKA_AUTH_SECRET}}},
        },
    }


def broker(namespace: str = NAMESPACE) -> JsonObject:
    return {
        **_BROKER,
        "metadata": {
            "name": BROKER,
            "namespace": namespace,
            "labels": _labels(),
            "annotations": {"eventing.knative.dev/broker.class": "Kafka"},
        },
        "spec": {
            "config": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": BROKER_CONFIG,
                "namespace": "knative-eventing",
            }
        },
    }


def broker_triggers(trigger: Trigger, namespace: str = NAMESPACE) -> list[JsonObject]:
    """The call Trigger (``event_type`` → the function) and the reply Trigger
    (``reply_type`` → the KafkaSink of ``reply_topic``)."""
    assert trigger.reply_topic and trigger.event_type and trigger.reply_type
    ordered = {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    call: JsonObject = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": trigger.name,
            "namespace": namespace,
            "labels": _labels(),
            "annotations": ordered,
        },
        "spec": {
            "broker": BROKER,
            "filter": {"attributes": {"type": trigger.event_type}},
            "subscriber": {"ref": {**_SERVICE, "name": trigger.function}},
            "delivery": delivery(trigger),
        },
    }
    reply: JsonObject = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": f"{trigger.name}-replies",
            "namespace": namespace,
            "labels": _labels(),
            "annotations": ordered,
        },
        "spec": {
            "broker": BROKER,
            "filter": {"attributes": {"type": trigger.reply_type}},
            "subscriber": {"ref": {**_SINK, "name": sink_name(trigger.reply_topic)}},
        },
    }
    return [call, reply]


def eventing(
    triggers: list[Trigger], namespace: str = NAMESPACE, bootstrap: str = BOOTSTRAP
) -> list[JsonObject]:
    """Every eventing object of ``triggers``: sources, the Broker and its Triggers, sinks."""
    objects = [kafka_source(t, namespace, bootstrap) for t in triggers]
    with_replies = [t for t in triggers if t.reply_topic]
    if with_replies:
        objects.append(broker(namespace))
    for t in with_replies:
        objects.extend(broker_triggers(t, namespace))
    topics = sorted(
        {t.dead_letter_topic for t in triggers if t.dead_letter_topic}
        | {t.reply_topic for t in with_replies if t.reply_topic}
    )
    objects.extend(kafka_sink(topic, namespace, bootstrap) for topic in topics)
    return objects


HEADER = """\
# GENERATED from triggers/triggers.yaml by `python -m triggers.knative`; do not edit.
# tests/knative check it is current. See triggers/knative.py for the why.
"""


def render(triggers: list[Trigger]) -> str:
    """``knative/base/eventing.yaml``: :func:`eventing` as YAML documents."""
    import yaml

    return HEADER + yaml.safe_dump_all(eventing(triggers), sort_keys=False)


if __name__ == "__main__":
    from triggers.spec import load_triggers

    print(render(load_triggers()), end="")
