"""Notification fanout: Kafka ``notifications`` → each person's channels.

A CloudEvents function: each event's data is one notification
(:class:`~dexorder.contracts.events.Notification`), handed to the gateway, which delivers
it once per event id to the person's open chat or Telegram; when none of them is reachable
now the gateway holds it durably and answers 202 (it reaches them when they next open a
chat), so any 2xx is done. The gateway unreachable or failing (5xx) → 503, so the trigger
retries it (and finally dead-letters it); malformed or for no account → 400, not retried. A
notification no platform part signed (``dexorder/record_signing.py``) → 403, never
delivered: the gateway would otherwise put anyone's text into anyone's chat with
platform authority.
"""

from __future__ import annotations

import aiohttp
import functions_framework.aio as ff
from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.contracts.events import decode_notification, encode_event
from dexorder.topics import NOTIFICATIONS
from gateway.function_events import signed_payload
from gateway.function_settings import FunctionSettings
from gateway.platform_calls import calling_token

config = FunctionSettings()


@ff.cloud_event
async def notify_people(event: CloudEvent) -> None:
    cfg = config.get()
    notification = signed_payload(cfg, NOTIFICATIONS, event, decode_notification)
    headers = {
        "Authorization": f"Bearer {calling_token(cfg)}",
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(
            f"{cfg.gateway.url}/internal/notify", data=encode_event(notification), headers=headers
        ) as r,
    ):
        if 200 <= r.status < 300:  # delivered, or held for when they connect
            return
        detail = (await r.text())[:300]
    raise HTTPException(503 if r.status >= 500 else 400, f"gateway answered {r.status}: {detail}")
