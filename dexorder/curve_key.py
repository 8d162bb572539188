"""A ZeroMQ CURVE key written as text: the one check the platform's relay keys
(:mod:`dexorder.relay_keys`) and the Flink job's relay publisher share.

Imports nothing of the platform's settings: the Flink job's own environment has none.
"""

from __future__ import annotations

from zmq.utils import z85


def curve_key(value: str) -> bytes:
    """``value`` as a Z85-encoded 32-byte CURVE key (surrounding whitespace ignored);
    :class:`ValueError` when it is not one."""
    key = value.strip().encode()
    try:
        if len(key) == 40 and len(z85.decode(key)) == 32:
            return key
    except ValueError:
        pass
    raise ValueError("not a Z85-encoded CURVE key (40 characters)")
