"""The stream runner's checkpoint: folding state plus the offsets it reflects.

Written atomically (temp file + rename) only after every closed candle the
state accounts for has been acknowledged by Kafka, so after a crash the runner
restores the state, re-reads ticks from ``tick_offsets``, and learns from
``market.candles`` (read from ``candle_offsets`` on) which closed candles it
had already emitted since.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Checkpoint(msgspec.Struct):
    #: next offset to read, per ``market.ticks`` partition
    tick_offsets: dict[int, int] = {}
    #: end of ``market.candles`` per partition when the checkpoint was taken
    candle_offsets: dict[int, int] = {}
    #: :meth:`streaming.candles.CandleBook.snapshot` output
    book: bytes = b""


def load(path: Path) -> Checkpoint | None:
    """Read the checkpoint at ``path``; None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return msgspec.msgpack.decode(data, type=Checkpoint)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` so that a crash leaves either the old or the new one."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(msgspec.msgpack.encode(checkpoint))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
