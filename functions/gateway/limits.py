"""Rate limits and monthly model budgets per licence tier.

In Redis when ``gateway.redis_url`` is set (shared by every gateway replica),
in this process otherwise. Windows are fixed (per minute, per calendar month
in UTC), which is what people can reason about: "20 messages a minute",
"US$1 of model use this month".

The budget is money, not tokens: the tiers' models differ fivefold in price (Haiku to
Opus) and an output token costs five input ones, so a token budget either starves the
cheap model or lets the dear one spend five times as much, and a fallback to a dearer
model would go uncounted. Tokens are still counted, for the person to see. Costs are
kept as whole micro-dollars (Redis counts integers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class TierLimits:
    #: chat messages a minute
    requests_per_minute: int
    #: US dollars of model use a month; None: no budget
    monthly_budget_usd: float | None
    #: MCP requests a minute through the gateway's /mcp door (an outside client's tool
    #: calls, listings and notifications: many per thing a person asks, none of them
    #: a model call, hence more than chat messages)
    mcp_requests_per_minute: int = 300


TIER_LIMITS = {
    "free": TierLimits(20, 1.0, mcp_requests_per_minute=120),
    "pro": TierLimits(120, 25.0, mcp_requests_per_minute=600),
    "enterprise": TierLimits(1_200, None, mcp_requests_per_minute=6_000),
}

_MICRO = 1_000_000


def tier_limits(budgets_usd: dict[str, float | None]) -> dict[str, TierLimits]:
    """The tiers' limits with the configured monthly budgets (``gateway.monthly_budget_usd``)."""
    return {
        tier: TierLimits(
            limits.requests_per_minute, budgets_usd.get(tier), limits.mcp_requests_per_minute
        )
        for tier, limits in TIER_LIMITS.items()
    }


def cost_usd(price_in: float, price_out: float, input_tokens: int, output_tokens: int) -> float:
    """What a model call cost, from its price per million input and output tokens."""
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    detail: str = ""


def month_key(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


class Counter(Protocol):
    """Where counts live (memory or Redis)."""

    async def incr(self, key: str, by: int, ttl_s: int) -> int: ...

    async def get(self, key: str) -> int: ...

    async def put(self, key: str, value: int, ttl_s: int) -> None:
        """Set ``key`` to ``value`` for ``ttl_s`` seconds (a new expiry)."""
        ...

    async def delete(self, key: str) -> None: ...


class MemoryCounter:
    """Counts in this process (one gateway process on one machine)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._values: dict[str, tuple[int, float]] = {}

    async def incr(self, key: str, by: int, ttl_s: int) -> int:
        now = self.clock()
        value, expires = self._values.get(key, (0, now + ttl_s))
        if expires <= now:
            value, expires = 0, now + ttl_s
        value += by
        self._values[key] = (value, expires)
        if len(self._values) > 100_000:  # drop what has expired
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return value

    async def get(self, key: str) -> int:
        value, expires = self._values.get(key, (0, 0.0))
        return value if expires > self.clock() else 0

    async def put(self, key: str, value: int, ttl_s: int) -> None:
        self._values[key] = (value, self.clock() + ttl_s)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)


class RedisCounter:
    """Counts in Redis: INCRBY then EXPIRE in one transaction."""

    def __init__(self, url: str, prefix: str = "dexorder:limits:") -> None:
        import redis.asyncio as redis

        self.redis = redis.from_url(url)
        self.prefix = prefix

    async def incr(self, key: str, by: int, ttl_s: int) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(self.prefix + key, by)
            pipe.expire(self.prefix + key, ttl_s, nx=True)
            value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str) -> int:
        raw = await self.redis.get(self.prefix + key)
        return int(raw) if raw is not None else 0

    async def put(self, key: str, value: int, ttl_s: int) -> None:
        await self.redis.set(self.prefix + key, value, ex=ttl_s)

    async def delete(self, key: str) -> None:
        await self.redis.delete(self.prefix + key)

    async def close(self) -> None:
        await self.redis.aclose()


class Limits:
    """Per-account request rate and LLM-token budget, by tier."""

    def __init__(
        self,
        counter: Counter,
        tiers: dict[str, TierLimits] = TIER_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counter = counter
        self.tiers = tiers
        self.clock = clock

    async def request(self, account_id: str, tier: str) -> Verdict:
        """Count one request; refuse it past the tier's rate."""
        now = self.clock()
        minute = int(now // 60)
        limit = self.tiers[tier].requests_per_minute
        used = await self.counter.incr(f"rate:{account_id}:{minute}", 1, 120)
        if used > limit:
            retry = 60 - int(now % 60)
            return Verdict(
                False, retry, f"rate limit: {limit} requests a minute on the {tier} tier"
            )
        return Verdict(True)

    async def mcp_request(self, account_id: str, tier: str) -> Verdict:
        """Count one request at the MCP door; refuse it past the tier's rate."""
        now = self.clock()
        limit = self.tiers[tier].mcp_requests_per_minute
        used = await self.counter.incr(f"mcp:{account_id}:{int(now // 60)}", 1, 120)
        if used > limit:
            return Verdict(
                False,
                60 - int(now % 60),
                f"rate limit: {limit} MCP requests a minute on the {tier} tier",
            )
        return Verdict(True)

    def _keys(self, account_id: str) -> tuple[str, str]:
        month = month_key(self.clock())
        return f"tokens:{account_id}:{month}", f"cost:{account_id}:{month}"

    async def budget(self, account_id: str, tier: str) -> Verdict:
        """Whether the account has model budget left this month."""
        budget = self.tiers[tier].monthly_budget_usd
        if budget is None:
            return Verdict(True)
        spent = await self.counter.get(self._keys(account_id)[1])
        if spent >= budget * _MICRO:
            return Verdict(False, detail=_used_up(budget, tier))
        return Verdict(True)

    async def spend(self, account_id: str, tokens: int, usd: float = 0.0) -> int:
        """Add a model call's ``tokens`` and cost to this month's; the month's tokens."""
        tokens_key, cost_key = self._keys(account_id)
        if usd > 0:
            await self.counter.incr(cost_key, max(1, round(usd * _MICRO)), 40 * 86_400)
        return await self.counter.incr(tokens_key, tokens, 40 * 86_400)

    async def charge(self, account_id: str, tier: str, tokens: int, usd: float) -> str | None:
        """Count one model call; what to tell the person if it used the budget up."""
        await self.spend(account_id, tokens, usd)
        verdict = await self.budget(account_id, tier)
        return None if verdict.allowed else verdict.detail

    async def used(self, account_id: str) -> int:
        """Tokens used this month."""
        return await self.counter.get(self._keys(account_id)[0])

    async def spent_usd(self, account_id: str) -> float:
        """What the month's model calls cost so far (US$)."""
        return await self.counter.get(self._keys(account_id)[1]) / _MICRO


def _used_up(budget: float, tier: str) -> str:
    return f"monthly model budget of US${budget:,.2f} used up on the {tier} tier"
