"""Rule delivery: Kafka ``rules.fired`` → the person's agent applies the fill.

A CloudEvents function. Each event's data is a fired order rule
(:class:`~dexorder.contracts.rules.RuleFired`, its rule an
:class:`~dexorder.contracts.rules.OrderTrigger`), produced by the stream engine and
signed like every platform record (unsigned or forged → 403, never applied; malformed →
400, not retried). The function asks the gateway for the person's agent — started if it
sleeps — and a short-lived token for it (``/internal/agent``), then calls the agent's
hidden tool ``apply_rule_fired`` over MCP. The agent applies a fill once per order, so a
redelivery (the trigger retries 5xx answers with backoff) changes nothing. A refusal by
the agent (the order is gone, the rule is not the order's) is a 422, not retried.
"""

from __future__ import annotations

import aiohttp
import functions_framework.aio as ff
import msgspec
from cloudevents.http import CloudEvent
from starlette.exceptions import HTTPException

from dexorder.config import Settings
from dexorder.contracts.accounts import AgentAddress, AgentRequest, encode
from dexorder.contracts.agent_tools import APPLY_RULE_FIRED
from dexorder.contracts.events import decode_rule_fired
from dexorder.contracts.rules import encode_fired
from dexorder.topics import RULES_FIRED
from gateway.function_events import signed_payload
from gateway.function_settings import FunctionSettings
from gateway.harness.agent_link import AgentLink
from gateway.platform_calls import calling_token

config = FunctionSettings()


async def _agent(cfg: Settings, user: str) -> AgentAddress:
    """The person's running agent and a token for it, from the gateway."""
    headers = {"Authorization": f"Bearer {calling_token(cfg)}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=150)) as http,
        http.post(
            f"{cfg.gateway.url}/internal/agent",
            data=encode(AgentRequest(user=user, token=True)),
            headers=headers,
        ) as r,
    ):
        body = await r.read()
        if r.status != 200:
            # a person gone (404) is no reason to retry; the rest may pass
            status = 404 if r.status == 404 else 503
            raise HTTPException(status, f"the gateway answered {r.status}: {body[:300]!r}")
    try:
        address = msgspec.json.decode(body, type=AgentAddress)
    except msgspec.ValidationError as exc:
        raise HTTPException(503, f"the gateway answered something else: {exc}") from None
    if address.token is None:
        raise HTTPException(503, "the gateway gave no token for the agent")
    return address


@ff.cloud_event
async def deliver_fired_rule(event: CloudEvent) -> None:
    cfg = config.get()
    fired = signed_payload(cfg, RULES_FIRED, event, decode_rule_fired)
    address = await _agent(cfg, fired.rule.user)
    assert address.token is not None
    try:
        async with AgentLink.open(address.mcp_url, address.token, timeout_s=60) as link:
            outcome = await link.call(
                APPLY_RULE_FIRED.name, {"fired": encode_fired(fired).decode()}
            )
    except Exception as exc:  # the agent stopped, the connection broke: the trigger retries
        raise HTTPException(503, f"the agent could not be reached: {exc!r}"[:400]) from None
    if outcome.is_error:
        raise HTTPException(422, f"the agent refused the fill: {outcome.as_text()[:300]}")
