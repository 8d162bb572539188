"""Reading files in folders someone else may have written, without following their links.

The agent reads back what it keeps per person (a backtest's chart). Such a
folder must never lead it elsewhere: every step is opened with ``O_NOFOLLOW``
relative to the one before, and only a regular file is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnsafeFile(ValueError):
    """Not a regular file reached without links; the message says which part."""


def _component(part: str) -> str:
    if not part or part in (".", "..") or "/" in part or "\0" in part:
        raise UnsafeFile(f"invalid path part {part!r}")
    return part


def read_regular(root: Path, *parts: str, max_bytes: int = 64 * 1024 * 1024) -> bytes:
    """The bytes of ``root/parts…``; :class:`FileNotFoundError` when absent,
    :class:`UnsafeFile` when a step is a link or the end is not a regular file."""
    if not parts:
        raise UnsafeFile("no file named")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(root, flags | os.O_DIRECTORY)
    except NotADirectoryError:
        raise UnsafeFile(f"{root} is not a folder") from None
    try:
        for part in parts[:-1]:
            try:
                step = os.open(_component(part), flags | os.O_DIRECTORY, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                raise UnsafeFile(f"{part} is not a folder") from None
            os.close(fd)
            fd = step
        try:
            leaf = os.open(_component(parts[-1]), flags | os.O_NONBLOCK, dir_fd=fd)
        except FileNotFoundError:
            raise
        except OSError:
            raise UnsafeFile(f"{parts[-1]} is a link or cannot be opened") from None
    finally:
        os.close(fd)
    try:
        info = os.fstat(leaf)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{parts[-1]} is not a regular file")
        if info.st_size > max_bytes:
            raise UnsafeFile(f"{parts[-1]} is larger than {max_bytes:,} bytes")
        with os.fdopen(leaf, "rb", closefd=False) as f:
            return f.read(max_bytes)
    finally:
        os.close(leaf)
