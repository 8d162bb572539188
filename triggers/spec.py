"""The trigger definitions (``triggers.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dexorder.config import ConfigError

DEFAULT_FILE = Path(__file__).resolve().parent / "triggers.yaml"


class Trigger(BaseModel):
    """One topic → one function, with Knative's delivery options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9-]{1,63}$")
    topic: str
    function: str
    retries: int = Field(5, ge=0, le=50)
    backoff: Literal["exponential", "linear"] = "exponential"
    backoff_delay_s: float = Field(0.5, ge=0)
    dead_letter_topic: str | None = None
    #: Where the function's reply CloudEvent goes. A KafkaSource drops replies, so in the
    #: cluster such a trigger runs through a Kafka Broker (triggers/knative.py): the
    #: KafkaSource feeds the Broker, a Trigger filtered on ``event_type`` calls the
    #: function, its reply goes back into the Broker and a second Trigger filtered on
    #: ``reply_type`` writes it to ``reply_topic`` through a KafkaSink. The local
    #: dispatcher does the same: only ``event_type`` events are delivered, only
    #: ``reply_type`` replies are written.
    reply_topic: str | None = None
    event_type: str | None = None
    reply_type: str | None = None

    @model_validator(mode="after")
    def _a_reply_needs_its_types(self) -> Trigger:
        if self.reply_topic and not (self.event_type and self.reply_type):
            raise ValueError("a trigger with reply_topic needs event_type and reply_type")
        return self

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based), as Knative computes it."""
        if self.backoff == "exponential":
            return float(self.backoff_delay_s * 2 ** (attempt - 1))
        return self.backoff_delay_s * attempt


class TriggerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    triggers: list[Trigger]


def load_triggers(path: Path = DEFAULT_FILE) -> list[Trigger]:
    """The triggers of ``path``; :class:`ConfigError` saying what is wrong."""
    try:
        return TriggerFile.model_validate(yaml.safe_load(path.read_text())).triggers
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
