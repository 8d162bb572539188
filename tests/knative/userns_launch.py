"""Run a command as a pod with ``hostUsers: false`` runs (tests/knative/test_agent_seccomp.py):
in a new user namespace whose uids 0-65535 are the host's 100000-165535, and a mount
namespace of its own, as that namespace's root. Run by root.

``python userns_launch.py COMMAND...``
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
#: the kubelet gives each such pod 65536 ids of its own
ID_MAP = "0 100000 65536\n"


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(mapped_w)
        try:
            if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
                os._exit(90)
            os.write(ready_w, b"1")
            if os.read(mapped_r, 1) != b"1":
                os._exit(91)
            # root of the new namespace before exec, so the command keeps its capabilities
            # there (to make its own mounts, as the runtime would)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            os.execvp(argv[0], argv)
        finally:
            os._exit(92)
    os.close(ready_w)
    os.close(mapped_r)
    if os.read(ready_r, 1) != b"1":  # the child failed before it was ready
        return 93
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as out:
            out.write(ID_MAP)
    os.write(mapped_w, b"1")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
