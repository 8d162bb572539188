"""Rate limits and monthly LLM budgets, in process and in the running Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from gateway.limits import Counter, Limits, MemoryCounter, RedisCounter, TierLimits, cost_usd

TIERS = {
    "free": TierLimits(requests_per_minute=3, monthly_budget_usd=0.01),
    "enterprise": TierLimits(requests_per_minute=100, monthly_budget_usd=None),
}


@pytest.fixture(params=["memory", "redis"])
async def counter(request: pytest.FixtureRequest, clock: list[float]) -> AsyncIterator[Counter]:
    if request.param == "memory":
        yield MemoryCounter(clock=lambda: clock[0])
        return
    redis_counter = RedisCounter("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}:")
    yield redis_counter
    await redis_counter.close()


@pytest.fixture
def clock() -> list[float]:
    return [1_800_000_000.0]  # 2027-01-15, mid-minute offsets below


async def test_requests_past_the_rate_are_refused_until_the_next_minute(
    counter: Counter, clock: list[float]
) -> None:
    limits = Limits(counter, TIERS, clock=lambda: clock[0])
    clock[0] = 1_800_000_000.0 - (1_800_000_000 % 60) + 50  # 10 s before a minute ends
    verdicts = [await limits.request("alice", "free") for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert verdicts[-1].retry_after_s == 10 and "3 requests a minute" in verdicts[-1].detail
    assert (await limits.request("bob", "free")).allowed  # per account
    clock[0] += 11
    assert (await limits.request("alice", "free")).allowed


async def test_the_monthly_budget(counter: Counter, clock: list[float]) -> None:
    limits = Limits(counter, TIERS, clock=lambda: clock[0])
    assert (await limits.budget("alice", "free")).allowed
    # 1,000 in + 1,000 out on Haiku (US$1 / US$5 a million): US$0.006
    usd = cost_usd(1.0, 5.0, 1_000, 1_000)
    assert usd == pytest.approx(0.006)
    assert await limits.charge("alice", "free", 2_000, usd) is None
    said = await limits.charge("alice", "free", 2_000, usd)  # US$0.012 of US$0.01
    assert said is not None and "US$0.01" in said and "free tier" in said
    refused = await limits.budget("alice", "free")
    assert not refused.allowed and refused.detail == said
    assert await limits.used("alice") == 4_000  # tokens still counted, for the person
    assert await limits.spent_usd("alice") == pytest.approx(0.012)
    assert (await limits.budget("alice", "enterprise")).allowed  # no budget on that tier
    clock[0] += 31 * 86_400  # next month
    assert (await limits.budget("alice", "free")).allowed and await limits.used("alice") == 0
