"""Idle shutdown: an agent nobody uses exits with code 42, and is started again on demand.

Idle means no MCP call for the tier's timeout (free 15 min, pro 60 min, enterprise
never; see ``agent.idle_timeout_s``) and no active trigger. Where the platform watches
the market, nothing is a trigger: a person's alerts and resting orders are rules the
stream engine evaluates, and a fill wakes the agent (``apply_rule_fired``). Only an
agent on its own counts its active alerts and open orders
(``PersonAgent.active_triggers``). Exit code 42 tells the provisioner it was a clean
idle shutdown, not a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from agent.person import Activity
from dexorder.process import AGENT_IDLE_EXIT_CODE

IDLE_EXIT_CODE = AGENT_IDLE_EXIT_CODE

log = structlog.get_logger(part="agent")


def is_idle(now: float, last_call: float, timeout_s: float | None, active_triggers: int) -> bool:
    """Whether an agent last called at ``last_call`` is idle at ``now``."""
    if timeout_s is None or active_triggers > 0:
        return False
    return now - last_call >= timeout_s


async def wait_until_idle(
    activity: Activity,
    timeout_s: float | None,
    active_triggers: Callable[[], int],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once the agent has been idle for ``timeout_s`` (never when None)."""
    if timeout_s is None:
        await asyncio.Event().wait()
    assert timeout_s is not None
    while True:
        now = clock()
        busy = active_triggers() + activity.in_flight  # never idle in the middle of a call
        if is_idle(now, activity.last_call, timeout_s, busy):
            # published in the same step as the decision (no await between): a caller's
            # ``POST /wake`` is either served before it (and resets the clock, so the agent
            # is not idle) or refused after it; never promised an agent that is leaving
            activity.exiting = True
            log.info("idle", seconds=round(now - activity.last_call, 1))
            return
        # wake when the timeout would run out, or soon if triggers hold it open
        await asyncio.sleep(max(0.05, min(timeout_s - (now - activity.last_call), timeout_s, 5.0)))


async def run_until_idle(
    serving: asyncio.Future[None],
    stop: Callable[[], Awaitable[None]],
    activity: Activity,
    timeout_s: float | None,
    active_triggers: Callable[[], int],
    flush: Callable[[], None],
) -> int:
    """Wait for ``serving`` to end (0) or for idleness (then stop, flush, return 42)."""
    idle = asyncio.create_task(wait_until_idle(activity, timeout_s, active_triggers))
    done, _ = await asyncio.wait({serving, idle}, return_when=asyncio.FIRST_COMPLETED)
    if idle in done:
        await stop()
        await serving
        flush()
        return IDLE_EXIT_CODE
    idle.cancel()
    serving.result()
    flush()
    return 0
