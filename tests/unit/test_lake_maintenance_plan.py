"""The pure parts of lake maintenance: which partitions to compact, durations."""

from __future__ import annotations

from datetime import date

import pytest

from launcher.lake import parse_duration
from streaming.lake_maintenance import Partition, plan_compaction


def test_only_partitions_with_enough_files_are_compacted() -> None:
    parts = [
        Partition(date(2024, 1, 1), "BINANCE:BTC/USDT", files=1),
        Partition(date(2024, 1, 1), "BINANCE:ETH/USDT", files=7),
        Partition(date(2024, 1, 2), "BINANCE:BTC/USDT", files=8),
        Partition(date(2024, 1, 2), "BINANCE:ETH/USDT", files=1440),
    ]
    assert [p.files for p in plan_compaction(parts, 8)] == [8, 1440]
    # a single file is never "compacted" into itself, whatever the threshold
    assert [p.files for p in plan_compaction(parts, 1)] == [7, 8, 1440]


def test_a_partition_starts_at_midnight_utc() -> None:
    assert Partition(date(2024, 1, 1), "X:A/B").start_ms == 1_704_067_200_000
    assert Partition(date(1970, 1, 2), "X:A/B").start_ms == 86_400_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", 90_000),
        ("30m", 1_800_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
        ("1.5h", 5_400_000),
        ("0s", 0),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "7", "a week", "-1h", "3y"])
def test_bad_durations_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected e\.g\. 30m, 24h or 7d"):
        parse_duration(text)
