"""The sandboxed process: read a :class:`~agent.sandbox.protocol.SandboxSpec` on stdin,
run its job, write a :class:`~agent.sandbox.protocol.SandboxReply` on the reply pipe.

Printed output goes to stdout (the parent caps it); the reply goes to the
descriptor named in ``DEXORDER_SANDBOX_RESULT_FD``. The containment is the
kernel's (see :mod:`agent.sandbox.isolation`); the audit hook installed here is
a second layer that turns the commonest refusals into clear messages.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

# Imported before the guard goes up: the person's code may use them, and their
# own start-up loads native code, which the guard then refuses.
import numpy  # noqa: F401
import pandas  # noqa: F401
import talib  # noqa: F401

from agent.sandbox import guard, protocol


def _reply(fd: int, reply: protocol.SandboxReply) -> None:
    view = memoryview(protocol.encode(reply))
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.close(fd)


def _limit_memory(memory_mb: int) -> None:
    """Let the person's code allocate ``memory_mb`` beyond what the libraries already mapped."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    mapped = pages * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    fd = int(os.environ.pop("DEXORDER_SANDBOX_RESULT_FD"))
    progress_fd = int(os.environ.pop(protocol.PROGRESS_FD_ENV, "-1"))

    def progress(done: int, total: int) -> None:
        if progress_fd >= 0:
            try:
                os.write(progress_fd, protocol.progress_line(done, total))
            except OSError:
                pass  # nobody listening: the run goes on

    spec = protocol.decode_spec(sys.stdin.buffer.read())
    scratch, workspace, inputs = Path(spec.scratch), Path(spec.workspace), Path(spec.inputs)
    from agent.backtest.runtime import where
    from agent.sandbox import jobs  # imports what jobs need before the guard is up

    _limit_memory(spec.memory_mb)
    guard.install([workspace, inputs], scratch, files=spec.guard_files)
    job = spec.job
    try:
        outcome = jobs.run(job, workspace, inputs, scratch, progress)
        reply = protocol.SandboxReply(outcome=outcome)
    except MemoryError:
        reply = protocol.SandboxReply(error="memory limit exceeded", failure="memory")
    except guard.SandboxViolation as exc:
        reply = protocol.SandboxReply(error=str(exc), failure="policy")
    except jobs.JobError as exc:
        reply = protocol.SandboxReply(error=str(exc), failure="error")
    except BaseException as exc:  # the person's code failed: say where
        reply = protocol.SandboxReply(error=where(exc, job.filename), failure="error")
    sys.stdout.flush()
    _reply(fd, reply)


if __name__ == "__main__":
    main()
