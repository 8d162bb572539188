"""Rate limits and monthly LLM-token budgets per licence tier.

In Redis when ``gateway.redis_url`` is set (shared by every gateway replica),
in this process otherwise. Windows are fixed (per minute, per calendar month
in UTC), which is what people can reason about: "20 messages a minute",
"200k tokens this month".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class TierLimits:
    requests_per_minute: int
    #: None: no budget
    monthly_llm_tokens: int | None


TIER_LIMITS = {
    "free": TierLimits(requests_per_minute=20, monthly_llm_tokens=200_000),
    "pro": TierLimits(requests_per_minute=120, monthly_llm_tokens=5_000_000),
    "enterprise": TierLimits(requests_per_minute=1_200, monthly_llm_tokens=None),
}


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

    async def budget(self, account_id: str, tier: str) -> Verdict:
        """Whether the account has LLM tokens left this month."""
        budget = self.tiers[tier].monthly_llm_tokens
        if budget is None:
            return Verdict(True)
        used = await self.counter.get(f"tokens:{account_id}:{month_key(self.clock())}")
        if used >= budget:
            return Verdict(
                False,
                detail=f"monthly LLM budget of {budget:,} tokens used up on the {tier} tier",
            )
        return Verdict(True)

    async def spend(self, account_id: str, tokens: int) -> int:
        """Add ``tokens`` to this month's use; returns the month's total."""
        return await self.counter.incr(
            f"tokens:{account_id}:{month_key(self.clock())}", tokens, 40 * 86_400
        )

    async def used(self, account_id: str) -> int:
        return await self.counter.get(f"tokens:{account_id}:{month_key(self.clock())}")
