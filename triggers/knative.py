"""The cluster form of ``triggers.yaml``: one Knative ``KafkaSource`` per trigger.

``python -m triggers kafkasources > kafkasources.yaml`` prints them; ``kubectl apply``
them beside the functions' Knative Services (``func deploy`` in each function folder).
"""

from __future__ import annotations

from typing import Any

from triggers.spec import Trigger


def _iso_seconds(seconds: float) -> str:
    return f"PT{seconds:g}S"


def kafka_source(
    trigger: Trigger,
    namespace: str = "dexorder",
    bootstrap: str = "kafka-kafka-bootstrap.kafka:9092",
) -> dict[str, Any]:
    """The KafkaSource delivering ``trigger.topic`` to its function's Knative Service."""
    delivery: dict[str, Any] = {
        "retry": trigger.retries,
        "backoffPolicy": trigger.backoff,
        "backoffDelay": _iso_seconds(trigger.backoff_delay_s),
    }
    if trigger.dead_letter_topic:
        delivery["deadLetterSink"] = {
            "ref": {
                "apiVersion": "eventing.knative.dev/v1alpha1",
                "kind": "KafkaSink",
                "name": trigger.dead_letter_topic.replace(".", "-"),
            }
        }
    return {
        "apiVersion": "sources.knative.dev/v1beta1",
        "kind": "KafkaSource",
        "metadata": {"name": trigger.name, "namespace": namespace},
        "spec": {
            "consumerGroup": f"dexorder-trigger-{trigger.name}",
            "bootstrapServers": [bootstrap],
            "topics": [trigger.topic],
            "initialOffset": "earliest",
            "sink": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": trigger.function,
                }
            },
            "delivery": delivery,
        },
    }
