"""``dexorder status``: can people's code run here, and if not, why.

The person's code (``run_python``, indicators, strategies) runs only in the
kernel sandbox; where it cannot be set up, agents refuse that code, and status
says so (unhealthy) rather than leaving people to find out from a tool error.
"""

from __future__ import annotations

from dexorder.config import Settings

#: Shown as the address of the sandbox row.
ADDRESS = "bubblewrap + seccomp"


def check(cfg: Settings) -> tuple[bool, str]:
    """(usable, what to say) for the sandbox agents on this machine would use."""
    if cfg.agent.sandbox.isolation == "none":
        return True, "off (agent.sandbox.isolation: none): for a single-user machine only"
    from agent.sandbox import isolation_status  # the agent package's public surface

    st = isolation_status(cfg.agent.sandbox.proc)
    if st.available:
        if cfg.agent.sandbox.proc == "none":
            return True, "people's code runs in its own namespaces, without /proc"
        return True, "people's code runs in its own namespaces"
    return False, f"people's code is refused: {st.reason}"
