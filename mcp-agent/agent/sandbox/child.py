"""The sandboxed process: read a :class:`~agent.sandbox.protocol.SandboxSpec` on stdin,
run its job, write a :class:`~agent.sandbox.protocol.SandboxReply` on the reply pipe.

Printed output goes to stdout (the parent caps it); the reply goes to the
descriptor named in ``DEXORDER_SANDBOX_RESULT_FD``. The containment is the
kernel's (see :mod:`agent.sandbox.isolation`); the audit hook installed here is
a second layer that turns the commonest refusals into clear messages.
"""

from __future__ import annotations

import mmap
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


def _mapped_bytes() -> int:
    """The address space this process has mapped: from ``/proc/self/statm``, or without a
    ``/proc`` (``agent.sandbox.proc: none``) found by :func:`_mapped_bytes_by_probe`."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except OSError:
        return _mapped_bytes_by_probe()
    return pages * os.sysconf("SC_PAGE_SIZE")


def _mapped_bytes_by_probe() -> int:
    """The mapped size, asked of the kernel through ``RLIMIT_AS`` alone: a page more can be
    mapped exactly while the soft limit is at least the mapped size plus a page, so a binary
    search over the soft limit (under the hard one the parent set) finds it to the page in
    some 25 tries. Anything that fails to map during a try (Python's own allocator too)
    counts as "does not fit"; the soft limit is put back after."""
    page = mmap.PAGESIZE
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    fits = hard if hard != resource.RLIM_INFINITY else 1 << 47  # user address space
    too_small = 0
    try:
        while fits - too_small > page:
            mid = (too_small + fits) // 2 // page * page
            try:
                resource.setrlimit(resource.RLIMIT_AS, (mid, hard))
                mmap.mmap(-1, page).close()
            except (OSError, MemoryError, ValueError):
                too_small = mid
            else:
                fits = mid
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return fits - page


def _limit_memory(memory_mb: int) -> None:
    """Let the person's code allocate ``memory_mb`` beyond what the libraries already mapped."""
    limit = _mapped_bytes() + memory_mb * 1024 * 1024
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
