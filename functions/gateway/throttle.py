"""Throttling guesses: sign-up, login and Telegram ``/link`` attempts, by key (a client
address, an account's email, a chat), with exponential backoff and a lockout.

Counts live where the rate limits live (:mod:`gateway.limits`: Redis shared by replicas,
or this process). Per key:

- ``fail:KEY`` counts the attempts of a series that did not succeed. An attempt is
  counted *before* its outcome is known (and taken back if it succeeds), so parallel
  guesses cannot all slip in under the limit: the counter is one atomic INCR.
- ``until:KEY`` is when the next attempt may be made (after backoff or a lockout).

After ``free_failures`` failures, the n-th further failure makes the next attempt wait
``backoff_base_s * 2**(n-1)`` seconds (capped); at ``lockout_failures`` the key is
locked for ``lockout_s``, after which a new series starts. Nothing here says whether an
account exists: the same keys and answers apply to any email.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from dexorder.config import AuthLimitsConfig
from gateway.limits import Counter, Verdict


@dataclass(frozen=True)
class Policy:
    """How one kind of key is throttled."""

    free_failures: int
    backoff_base_s: float
    backoff_max_s: int
    lockout_failures: int
    lockout_s: int
    window_s: int

    def delay_after(self, failures: int) -> float:
        """Seconds the next attempt must wait after ``failures`` failures in a row."""
        if failures >= self.lockout_failures:
            return float(self.lockout_s)
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        return min(self.backoff_base_s * 2.0 ** min(extra - 1, 62), float(self.backoff_max_s))


@dataclass(frozen=True)
class AuthPolicies:
    """The policies of the gateway's guessable doors, from ``gateway.auth_limits``."""

    account: Policy
    address: Policy
    link: Policy
    signups_per_hour: int

    @classmethod
    def from_config(cls, c: AuthLimitsConfig) -> AuthPolicies:
        def policy(lockout_failures: int) -> Policy:
            return Policy(
                c.free_failures,
                c.backoff_base_s,
                c.backoff_max_s,
                lockout_failures,
                c.lockout_s,
                c.failure_window_s,
            )

        return cls(
            policy(c.account_lockout_failures),
            policy(c.address_lockout_failures),
            policy(c.link_lockout_failures),
            c.signups_per_hour,
        )


def address_key(host: str | None) -> str:
    """The key of a client address: IPv4 as is, IPv6 by its /64 (one host's share)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return f"addr:{(host or 'unknown')[:64]}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


def account_key(email: str) -> str:
    """The key of a login by email (hashed: no email is kept in the counters)."""
    return "acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class Throttle:
    """Attempts by key over ``counter``; ``clock`` is injectable for tests."""

    def __init__(
        self, counter: Counter, policies: AuthPolicies, clock: Callable[[], float] = time.time
    ) -> None:
        self.counter = counter
        self.policies = policies
        self.clock = clock

    async def _wait(self, key: str) -> int:
        """Whole seconds until ``key`` may try again (0: now)."""
        until = await self.counter.get(f"until:{key}")
        return max(0, math.ceil(until - self.clock()))

    async def attempt(self, *keyed: tuple[str, Policy]) -> Verdict:
        """Whether an attempt under every key may be made now; if so it is counted (as a
        failure until :meth:`succeeded` takes it back)."""
        wait = max([await self._wait(key) for key, _ in keyed], default=0)
        if wait:
            return Verdict(False, wait, "too many attempts")
        counted: list[str] = []
        for key, policy in keyed:
            failures = await self.counter.incr(f"fail:{key}", 1, policy.window_s)
            counted.append(key)
            if failures > policy.lockout_failures:  # parallel guesses past the limit
                for done in counted:
                    await self.counter.incr(f"fail:{done}", -1, policy.window_s)
                return Verdict(False, max(await self._wait(key), 1), "too many attempts")
        return Verdict(True)

    async def failed(self, *keyed: tuple[str, Policy]) -> None:
        """The attempt counted by :meth:`attempt` failed: back off, or lock."""
        now = self.clock()
        for key, policy in keyed:
            failures = await self.counter.get(f"fail:{key}")
            delay = policy.delay_after(failures)
            if not delay:
                continue
            ttl = math.ceil(delay) + 1
            await self.counter.put(f"until:{key}", math.ceil(now + delay), ttl)
            if failures >= policy.lockout_failures:
                # the series ends with the lockout: the count expires when the lock does
                await self.counter.put(f"fail:{key}", failures, ttl)

    async def succeeded(self, forget: tuple[str, ...] = (), uncount: tuple[str, ...] = ()) -> None:
        """The attempt succeeded: ``forget`` keys start afresh (the account); ``uncount``
        keys only lose this attempt (an address: its earlier failures still count, so
        logging in to one's own account does not wash an address's guesses away)."""
        for key in forget:
            await self.counter.delete(f"fail:{key}")
            await self.counter.delete(f"until:{key}")
        for key in uncount:
            await self.counter.incr(f"fail:{key}", -1, 60)

    async def count(self, key: str, limit: int, window_s: int) -> Verdict:
        """One more event under ``key`` in a fixed window; refused past ``limit``."""
        now = self.clock()
        bucket = int(now // window_s)
        used = await self.counter.incr(f"count:{key}:{bucket}", 1, window_s * 2)
        if used > limit:
            return Verdict(False, max(1, math.ceil((bucket + 1) * window_s - now)), "too many")
        return Verdict(True)
