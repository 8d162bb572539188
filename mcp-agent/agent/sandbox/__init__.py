"""Running the person's code (``run_python``, indicators, strategies) in a separate process.

:mod:`.runner` starts the process with CPU-time, memory, file-size and
wall-clock limits, caps its output, and turns every breach into a
:class:`SandboxResult` naming the limit. :mod:`.guard` runs inside the child:
no network, no new processes, no native code loading, the workspace
read-only, only the scratch folder writable.
"""

from agent.sandbox.runner import Limits, SandboxResult, run_sandboxed

__all__ = ["Limits", "SandboxResult", "run_sandboxed"]
