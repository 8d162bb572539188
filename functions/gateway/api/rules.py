"""``/internal/rules``: a person's agent registers, removes and reads its market rules.

Only an agent's own service token is taken (the one the provisioner hands it and it signs
its critical events with): it names the person, and a person's agent can touch only that
person's rules — a rule of another person is a 403, as is a rule body naming someone
else. No token or an invalid one is a 401. Personal access tokens are refused: an
external MCP client reaches the person's agent through ``/mcp``, never this door.

- ``PUT /internal/rules/{id}``: the body is a :class:`~dexorder.contracts.rules.Rule`
  (its ``id`` the path's); 201 with the :class:`RuleRecord` written, 200 if exactly that
  rule is there already (an agent retrying), 400 for a bad rule, 409 over the person's
  limits or for an id in use with other terms, 503 while Kafka is unreachable.
- ``DELETE /internal/rules/{id}`` (``?unless_fired=1``: 409 if it fired): 200 with the
  rule removed, 404 if the person has no such rule.
- ``GET /internal/rules``: the person's rules with their fired state.

Writes are limited to :data:`WRITES_PER_MINUTE` a person (429 past it).
"""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dexorder.contracts.rules import (
    RULE_ID_PATTERN,
    BadRule,
    RuleDeleted,
    RuleList,
    RuleRecord,
    convert_rule,
    encode_answer,
)
from dexorder.tokens import InvalidToken, verify_token
from gateway.accounts.store import AccountError
from gateway.api.common import answers_refusals, bearer, body, gateway_of
from gateway.platform_calls import PLATFORM
from gateway.rules import RuleRefused, RuleStore
from gateway.service import Refused

_RULE_ID = re.compile(RULE_ID_PATTERN)


async def _agent_of(request: Request) -> str:
    """The person whose agent's service token the request bears (401/403 otherwise)."""
    token = bearer(request)
    gw = gateway_of(request)
    try:
        claims = verify_token(gw.keys, token)
    except InvalidToken as exc:
        raise Refused(401, str(exc)) from None
    if claims.kind != "service" or claims.user == PLATFORM:
        raise Refused(403, "only a person's agent may change their rules")
    try:
        await asyncio.to_thread(gw.accounts.get, claims.user)
    except AccountError:
        raise Refused(401, "the account of this token no longer exists") from None
    return claims.user


#: Rule writes (puts and deletes) one person's agent may make a minute: far above what a
#: person sets by hand, far below what would flood ``market.rules``.
WRITES_PER_MINUTE = 120


async def _writing(request: Request, user: str) -> None:
    verdict = await gateway_of(request).throttle.count(f"rules:{user}", WRITES_PER_MINUTE, 60)
    if not verdict.allowed:
        raise Refused(
            429,
            f"at most {WRITES_PER_MINUTE} alert and order changes a minute; try again shortly",
            verdict.retry_after_s,
        )


def _store(request: Request) -> RuleStore:
    store = gateway_of(request).rules
    if store is None:
        raise Refused(503, "market rules are off: this gateway has no Kafka to keep them")
    return store


def _rule_id(request: Request) -> str:
    rule_id = str(request.path_params["rule_id"])
    if not _RULE_ID.match(rule_id):
        raise Refused(400, f"invalid rule id {rule_id[:80]!r}: 1-64 letters, digits, '_.:-'")
    return rule_id


def _json(value: RuleRecord | RuleList | RuleDeleted, status: int = 200) -> Response:
    return Response(encode_answer(value), status_code=status, media_type="application/json")


@answers_refusals
async def put_rule(request: Request) -> Response:
    user = await _agent_of(request)
    store = _store(request)
    rule_id = _rule_id(request)
    await _writing(request, user)
    try:
        rule = convert_rule(await body(request))
    except BadRule as exc:
        raise Refused(400, str(exc)) from None
    if rule.id != rule_id:
        raise Refused(400, f"the body's id {rule.id!r} is not the path's {rule_id!r}")
    if rule.user != user:
        raise Refused(403, "a rule of another person: an agent keeps only its own person's")
    try:
        record, created = await store.put(rule)
    except RuleRefused as exc:
        raise Refused(exc.status, exc.message) from None
    return _json(record, 201 if created else 200)


@answers_refusals
async def delete_rule(request: Request) -> Response:
    user = await _agent_of(request)
    store = _store(request)
    rule_id = _rule_id(request)
    await _writing(request, user)
    unless_fired = request.query_params.get("unless_fired", "") in ("1", "true")
    try:
        record = await store.delete(user, rule_id, unless_fired=unless_fired)
    except RuleRefused as exc:
        raise Refused(exc.status, exc.message) from None
    return _json(RuleDeleted(deleted=record))


@answers_refusals
async def list_rules(request: Request) -> Response:
    user = await _agent_of(request)
    store = _store(request)
    try:
        records = await store.rules_of(user)
    except RuleRefused as exc:
        raise Refused(exc.status, exc.message) from None
    return _json(RuleList(rules=records))


routes = [
    Route("/internal/rules", list_rules, methods=["GET"]),
    Route("/internal/rules/{rule_id}", put_rule, methods=["PUT"]),
    Route("/internal/rules/{rule_id}", delete_rule, methods=["DELETE"]),
]
