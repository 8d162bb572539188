"""Secrets a machine makes for itself on first use, kept in files only its owner reads."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path`` (mode 0600); ``make()`` gives it on first use.

    When processes race to make it, the first one's secret is the one everybody reads.
    """
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = make()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret)
        try:
            os.link(tmp, path)  # fails if another process linked its secret first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text()
