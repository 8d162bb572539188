"""Notification fanout: Kafka ``notifications`` → each person's channels.

A CloudEvents function: each event's data is one notification (``event_id``, ``user``,
``kind``, ``payload``), handed to the gateway, which delivers it once per event id to
the person's open chat or Telegram. Undeliverable now → 503, so the trigger retries it
(and finally dead-letters it); malformed → 400, not retried. A notification no platform
part signed (``dexorder/record_signing.py``) → 403, never delivered: the gateway would
otherwise put anyone's text into anyone's chat with platform authority.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import functions_framework.aio as ff
from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.record_signing import EXTENSION, ForgedRecord, record_keys, verify
from dexorder.tokens import token_keys
from dexorder.topics import NOTIFICATIONS
from gateway.function_settings import FunctionSettings
from gateway.platform_calls import platform_token

NOTIFICATION_FIELDS = ("event_id", "user", "kind")


config = FunctionSettings()


def _data(event: CloudEvent) -> dict[str, Any]:
    raw = event.get_data()
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except ValueError:
        raise HTTPException(400, "the event data is not JSON") from None
    if not isinstance(data, dict) or any(
        not isinstance(data.get(k), str) for k in NOTIFICATION_FIELDS
    ):
        raise HTTPException(
            400, f"a notification needs string fields {', '.join(NOTIFICATION_FIELDS)}"
        )
    return data


@ff.cloud_event
async def notify_people(event: CloudEvent) -> None:
    cfg = config.get()
    try:
        verify(record_keys(cfg), NOTIFICATIONS, event.get_data(), event.get(EXTENSION))
    except ForgedRecord as exc:
        raise HTTPException(403, str(exc)) from None
    data = _data(event)
    headers = {"Authorization": f"Bearer {platform_token(token_keys(cfg))}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(f"{cfg.gateway.url}/internal/notify", json=data, headers=headers) as r,
    ):
        if r.status == 200:
            return
        detail = (await r.text())[:300]
    raise HTTPException(503 if r.status >= 500 else 400, f"gateway answered {r.status}: {detail}")
