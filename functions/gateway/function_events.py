"""What every CloudEvents function does first with its event: check that a platform part
signed it (``dexorder/record_signing.py``), then decode its payload with its contract
(``dexorder/contracts/events.py``). A forged event is a 403, a malformed one a 4xx;
neither reaches the function's body."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.config import Settings
from dexorder.contracts.events import BadEvent
from dexorder.record_signing import EXTENSION, ForgedRecord, record_keys, verify

T = TypeVar("T")


def signed_payload(
    cfg: Settings, topic: str, event: CloudEvent, decode: Callable[[object], T]
) -> T:
    """The payload of ``event`` (from Kafka ``topic``) once its signature checks out."""
    data = event.get_data()
    try:
        verify(record_keys(cfg), topic, data, event.get(EXTENSION))
    except ForgedRecord as exc:
        raise HTTPException(403, str(exc)) from None
    try:
        return decode(data)
    except BadEvent as exc:
        raise HTTPException(exc.status, str(exc)) from None
