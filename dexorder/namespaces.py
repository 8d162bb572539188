"""What every bubblewrap view of this machine shows: the system and the code, read-only.

Two parts put processes in namespaces of their own with bubblewrap: the gateway
(each person's agent) and the agent (each run of the person's code). Both show
the same system folders and the same Python and platform packages; this is
where those lists are made.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path


def system_binds() -> list[str]:
    """bwrap arguments showing ``/usr`` read-only, and ``/bin``, ``/lib``… as the host has them
    (links into ``/usr`` on a merged-usr system, folders elsewhere)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "lib32", "sbin"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    return args


def code_roots(packages: Iterable[str]) -> list[str]:
    """Folders to show read-only so Python runs and imports ``packages``: the installation,
    the virtualenv, and the packages' own folders (an editable install keeps them outside
    site-packages). Nested folders and ``/usr`` (shown whole) are left out."""
    roots = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix]
    roots.append(str(Path(sys.executable).resolve().parent.parent))
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            roots.extend(spec.submodule_search_locations)
    kept: list[str] = []
    for root in sorted({os.path.realpath(r) for r in roots}, key=len):
        if root in ("/", "/usr") or root.startswith("/usr/"):
            continue
        if any(root == k or root.startswith(k + os.sep) for k in kept):
            continue
        kept.append(root)
    for raw in (sys.prefix, sys.base_prefix):  # as Python spells them, when through a link
        if raw != os.path.realpath(raw) and raw not in kept:
            kept.append(raw)
    return kept
