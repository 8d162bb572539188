"""Running the person's code (``run_python``, indicators, strategies) in a sandbox.

:mod:`.isolation` is the containment: each run a fresh process tree in its own
namespaces under bubblewrap, with a seccomp filter. :mod:`.runner` starts it
with CPU-time, memory, output and wall-clock limits and turns every breach into
a :class:`SandboxResult` naming the limit. :mod:`.protocol` types the job and
the reply. :mod:`.guard` (an audit hook inside the run) is a second layer that
only makes refusals read well; nothing depends on it.
"""

from agent.sandbox.isolation import IsolationStatus
from agent.sandbox.isolation import status as isolation_status
from agent.sandbox.runner import (
    Limits,
    SandboxResult,
    SandboxUnavailable,
    check_available,
    run_sandboxed,
    warn_if_unisolated,
)

__all__ = [
    "IsolationStatus",
    "Limits",
    "SandboxResult",
    "SandboxUnavailable",
    "check_available",
    "isolation_status",
    "run_sandboxed",
    "warn_if_unisolated",
]
