"""The sandboxed process: read a job on stdin, run it under the guard, report on a pipe.

Jobs:

* ``{"kind": "python", "code": ...}``: run code; ``result`` (if it sets one) is the value;
* ``{"kind": "validate", "module": "indicators"|"strategies", "name": ..., "code": ...}``;
* ``{"kind": "backtest", "strategy": ..., "request": {...}}``.

Printed output goes to stdout (the parent caps it); the structured reply is
JSON on the descriptor the parent passed in ``DEXORDER_SANDBOX_RESULT_FD``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

# Imported before the guard goes up: the person's code may use them, and their
# own start-up loads native code, which the guard then refuses.
import numpy  # noqa: F401
import pandas  # noqa: F401
import talib  # noqa: F401

from agent.sandbox import guard

USER_FILE = "<run_python>"


def _reply(fd: int, reply: dict[str, Any]) -> None:
    data = json.dumps(reply, default=str).encode()
    view = memoryview(data)
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
    spec = json.loads(sys.stdin.read())
    scratch = Path(spec["scratch"])
    workspace = Path(spec["workspace"])
    network_isolated = guard.isolate_network()
    from agent.backtest.runtime import where
    from agent.sandbox import jobs  # imports what jobs need before the guard is up

    _limit_memory(int(spec["memory_mb"]))
    guard.install([workspace, *map(Path, spec["readable"])], scratch)
    job = spec["job"]
    try:
        value, files = jobs.run(job, workspace, scratch)
        reply = {"ok": True, "value": value, "files": files, "network_isolated": network_isolated}
    except MemoryError:
        reply = {"ok": False, "limit": "memory", "error": "memory limit exceeded"}
    except guard.SandboxViolation as exc:
        reply = {"ok": False, "limit": "policy", "error": str(exc)}
    except jobs.JobError as exc:
        reply = {"ok": False, "error": str(exc)}
    except BaseException as exc:  # the person's code failed: say where
        reply = {"ok": False, "error": where(exc, job.get("filename", USER_FILE))}
    sys.stdout.flush()
    _reply(fd, reply)


if __name__ == "__main__":
    main()
