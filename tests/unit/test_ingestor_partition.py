"""The ingestor's partitioner puts every key where Kafka's default one does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from services.ingestor.partition import cached_partitioner


def test_same_partition_as_the_default_for_every_key_and_count() -> None:
    default = DefaultPartitioner()
    keys = [f"BINANCE:{b}/USDT".encode() for b in ("BTC", "ETH", "SOL", "DOGE", "X" * 40)]
    keys += [b"", b"\x00\xff", bytes(range(256))]
    for n in (1, 2, 3, 7, 12, 64):
        parts = list(range(n))
        for key in keys:
            for _ in range(2):  # hashed, then remembered
                assert cached_partitioner(key, parts, parts) == default(key, parts, parts)
    assert cached_partitioner(None, [0, 1, 2], [1]) == 1  # no key: an available partition
