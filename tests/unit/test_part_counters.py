"""A part's /healthz figures come from its Prometheus counters, counted from its start."""

from __future__ import annotations

from prometheus_client import Counter

from dexorder.health import CounterReading, PartCounters, counter_total

SEEN = Counter("test_part_counters_seen_total", "Things seen", ["kind"])


def test_figures_count_from_each_part_start_and_by_label() -> None:
    SEEN.labels("good").inc(5)  # before the part: not its own
    first = PartCounters({"seen": SEEN, "bad": CounterReading(SEEN, {"kind": "bad"})})
    SEEN.labels("good").inc(2)
    SEEN.labels("bad").inc()
    assert dict(first) == {"seen": 3, "bad": 1}
    second = PartCounters({"seen": SEEN})  # a part started after the first, same process
    SEEN.labels("bad").inc()
    assert second["seen"] == 1 and first["seen"] == 4
    assert counter_total(SEEN, kind="good") == 7
