"""The agent pods' seccomp profile: the container runtime's default rules plus exactly what
bubblewrap needs to build the person's code sandbox in an unprivileged user namespace.

``moby-default.json`` is Moby's default profile verbatim (github.com/moby/profiles,
``seccomp/default.json`` at commit 3c28324314729dbade8287e868eef6338c42807a, 2026-05-06):
the rules containerd's and Docker's ``RuntimeDefault`` apply. It is conditional (rules
included or excluded by the container's capabilities and the CPU architecture); a kubelet
``Localhost`` profile is read as a plain OCI seccomp object by containerd, which ignores
those conditions. So :func:`resolve` flattens it for a container with NO capabilities
(the agent drops ALL) on amd64 and arm64, and :func:`agent_profile` adds :data:`BWRAP`.

Why those calls and no others: ``strace -f`` of the agent's own sandbox probe
(``agent.sandbox.isolation.status``) as uid 10001 with no capabilities lists every call
bubblewrap makes; of those, the flattened default refuses ``clone`` with namespace flags,
``unshare``, ``mount``, ``umount2``, ``pivot_root`` and ``sethostname`` (the default allows
them only with CAP_SYS_ADMIN). Without CAP_SYS_ADMIN in the pod's own user namespace the
kernel still refuses each of them there; they work only inside the new user namespace
bwrap creates. ``clone3`` keeps the default's ENOSYS (bwrap and glibc fall back to
``clone``, whose flags seccomp can see).

``python knative/seccomp/render.py`` writes ``knative/base/seccomp/agent.json``;
tests/knative check it is current and load it into a real seccomp filter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT = HERE / "moby-default.json"
OUTPUT = HERE.parent / "base" / "seccomp" / "agent.json"

#: Architectures the profile is flattened for (Moby's names), with their sub-architectures.
ARCHES = ("amd64", "x32", "x86", "arm64", "arm")
OCI_ARCHES = (
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
)

#: What bubblewrap calls that the default refuses to a process without CAP_SYS_ADMIN.
BWRAP = ("clone", "unshare", "mount", "umount2", "pivot_root", "sethostname")


def _included(rule: dict[str, Any], caps: frozenset[str]) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("arches") and not set(inc["arches"]) & set(ARCHES):
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    # an arch exclusion drops the rule only if it covers every arch we build for
    return not (exc.get("arches") and set(ARCHES) <= set(exc["arches"]))


def resolve(default: dict[str, Any], caps: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Moby's conditional profile as a plain OCI profile for a container holding ``caps``.

    ``minKernel`` conditions are taken as met (4.8 and later: every supported node)."""
    syscalls = []
    for rule in default["syscalls"]:
        if not _included(rule, caps):
            continue
        syscalls.append({k: v for k, v in rule.items() if k not in ("includes", "excludes")})
    return {
        "defaultAction": default["defaultAction"],
        "defaultErrnoRet": default["defaultErrnoRet"],
        "architectures": list(OCI_ARCHES),
        "syscalls": syscalls,
    }


def agent_profile(default: dict[str, Any]) -> dict[str, Any]:
    """The flattened default with :data:`BWRAP` allowed (and the default's clone-without-
    namespaces rule dropped: ``clone`` is allowed whole)."""
    profile = resolve(default)
    profile["syscalls"] = [
        r for r in profile["syscalls"] if not (r["names"] == ["clone"] and r.get("args"))
    ]
    profile["syscalls"].append(
        {
            "names": list(BWRAP),
            "action": "SCMP_ACT_ALLOW",
            "comment": "bubblewrap: the person's code sandbox in an unprivileged user "
            "namespace (knative/seccomp/render.py says why each)",
        }
    )
    return profile


def load_default() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DEFAULT.read_text())
    return loaded


def render() -> str:
    return json.dumps(agent_profile(load_default()), indent=1) + "\n"


if __name__ == "__main__":
    if "--stdout" in sys.argv:
        sys.stdout.write(render())
    else:
        OUTPUT.write_text(render())
