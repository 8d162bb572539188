"""Backfill dispatch: Kafka ``backfill.requests`` → the relay's ROUTER (DESIGN.md's history path).

A CloudEvents function: each event's data is a backfill request (``ticker``,
``timeframe``, ``start``, ``end`` in ms, optional ``request_id``). A request the relay
refuses, or that is malformed, is answered 400 (not retried); a relay that does not
answer, 503 (retried, then dead-lettered); one no platform part signed
(``dexorder/record_signing.py``), 403.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import functions_framework.aio as ff
from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.client import RelayError, request
from dexorder.markets import InvalidTicker, InvalidTimeframe, Ticker, Timeframe
from dexorder.record_signing import EXTENSION, ForgedRecord, record_keys, verify
from dexorder.schemas import BackfillRequest, ErrorReply
from dexorder.topics import BACKFILL_REQUESTS
from gateway.function_settings import FunctionSettings

config = FunctionSettings()


def parse_request(raw: Any) -> BackfillRequest:
    """The :class:`BackfillRequest` an event carries; HTTP 400 saying what is wrong."""
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
    except ValueError:
        raise HTTPException(400, "the event data is not JSON") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "the event data must be a JSON object")
    try:
        ticker = str(Ticker.parse(str(data.get("ticker", ""))))
        timeframe = Timeframe.parse(str(data.get("timeframe", ""))).value
        start, end = int(data["start"]), int(data["end"])
    except (InvalidTicker, InvalidTimeframe) as exc:
        raise HTTPException(400, str(exc)) from None
    except (KeyError, TypeError, ValueError):
        raise HTTPException(400, "start and end (epoch ms) are required") from None
    if end <= start:
        raise HTTPException(400, "start must be before end")
    request_id = str(data.get("request_id") or uuid.uuid4().hex)
    return BackfillRequest(
        request_id=request_id, ticker=ticker, timeframe=timeframe, start=start, end=end
    )


@ff.cloud_event
async def dispatch_backfill(event: CloudEvent) -> None:
    cfg = config.get()
    try:
        verify(record_keys(cfg), BACKFILL_REQUESTS, event.get_data(), event.get(EXTENSION))
    except ForgedRecord as exc:
        raise HTTPException(403, str(exc)) from None
    backfill = parse_request(event.get_data())
    r = cfg.relay
    try:
        reply = await request(f"tcp://{r.host}:{r.router_port}", backfill)
    except RelayError as exc:
        raise HTTPException(503, str(exc)) from None
    if isinstance(reply, ErrorReply):
        raise HTTPException(400, f"the relay refused it: {reply.code}: {reply.message}")
