"""Backfill dispatch: Kafka ``backfill.requests`` → the relay's ROUTER (DESIGN.md's history path).

A CloudEvents function: each event's data is a
:class:`~dexorder.contracts.events.BackfillCall` (``ticker``, ``timeframe``, ``start``,
``end`` in ms, optional ``request_id``). A request the relay
refuses, or that is malformed, is answered 400 (not retried); a relay that does not
answer, 503 (retried, then dead-lettered); one no platform part signed
(``dexorder/record_signing.py``), 403.
"""

from __future__ import annotations

import functions_framework.aio as ff
from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.client import RelayError, request
from dexorder.contracts.events import decode_backfill
from dexorder.schemas import ErrorReply
from dexorder.topics import BACKFILL_REQUESTS
from gateway.function_events import signed_payload
from gateway.function_settings import FunctionSettings

config = FunctionSettings()


@ff.cloud_event
async def dispatch_backfill(event: CloudEvent) -> None:
    cfg = config.get()
    backfill = signed_payload(cfg, BACKFILL_REQUESTS, event, decode_backfill)
    try:
        reply = await request(cfg.relay.router_address, backfill)
    except RelayError as exc:
        raise HTTPException(503, str(exc)) from None
    if isinstance(reply, ErrorReply):
        raise HTTPException(400, f"the relay refused it: {reply.code}: {reply.message}")
