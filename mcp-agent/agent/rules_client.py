"""The agent's side of the platform's market rules: register, remove and read its person's
rules through the gateway (``/internal/rules``), with its own service token.

Watching the market is the platform's job: a price alert or a resting paper order is a
rule the stream engine evaluates, so the agent can sleep. Agents never reach Kafka (in
the cluster a network policy forbids it); the gateway writes the rules for them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import msgspec

from dexorder.contracts.rules import (
    BadRule,
    Rule,
    RuleRecord,
    decode_deleted,
    decode_list,
    decode_record,
)

T = TypeVar("T")


class RuleError(ValueError):
    """The platform did not take the rule call; the message is for the person, ``status``
    the gateway's answer (None: it was not reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AlreadyFired(RuleError):
    """The rule fired before it could be removed (an order being filled)."""


def new_rule_id(kind: str) -> str:
    """A rule id no one else has (rules of every person share one topic)."""
    return f"{kind}-{uuid.uuid4().hex}"


class RuleClient:
    """Calls to the gateway's rules endpoint for ``user``'s agent."""

    def __init__(self, base_url: str, token: Callable[[], str], timeout_s: float = 15.0) -> None:
        self.base = base_url.rstrip("/") + "/internal/rules"
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _call(self, method: str, path: str = "", body: bytes | None = None) -> bytes:
        headers = {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as http,
                http.request(method, self.base + path, data=body, headers=headers) as r,
            ):
                data = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuleError(
                f"the platform cannot be reached to watch the market ({exc or type(exc).__name__});"
                " try again shortly"
            ) from None
        if status < 300:
            return data
        message = _error_of(data)
        if status >= 500:
            message = f"the platform cannot watch the market right now: {message}"
        raise RuleError(message, status)

    async def put(self, rule: Rule) -> RuleRecord:
        """Register ``rule`` (repeating a put that was lost is harmless)."""
        data = await self._call("PUT", f"/{rule.id}", msgspec.json.encode(rule))
        return _read(decode_record, data)

    async def delete(self, rule_id: str, unless_fired: bool = False) -> RuleRecord | None:
        """Remove a rule; None when there is none of that id. :class:`AlreadyFired` when
        ``unless_fired`` and it fired."""
        query = "?unless_fired=1" if unless_fired else ""
        try:
            data = await self._call("DELETE", f"/{rule_id}{query}")
        except RuleError as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:  # a delete's only conflict: it fired (unless_fired)
                raise AlreadyFired(str(exc), 409) from None
            raise
        return _read(decode_deleted, data).deleted

    async def list(self) -> list[RuleRecord]:
        """The person's rules, each with its fired state."""
        return _read(decode_list, await self._call("GET")).rules


def _read(decode: Callable[[bytes], T], data: bytes) -> T:
    try:
        return decode(data)
    except BadRule as exc:
        raise RuleError(f"the platform answered something else than a rule: {exc}") from None


def _error_of(data: bytes) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return data[:200].decode(errors="replace")
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return str(value["error"])[:500]
    return data[:200].decode(errors="replace")
