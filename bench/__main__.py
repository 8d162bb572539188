"""Run the benchmarks and print their figures: ``python -m bench [NAME ...]`` (default: all)."""

from __future__ import annotations

import sys
import time

from bench import (
    agent,
    alerts,
    context,
    flink,
    gateway,
    history,
    knative,
    latency,
    relay_fanout,
    rules,
    sandbox,
    stream_throughput,
    workspace,
)

BENCHES = {
    "stream": stream_throughput.main,
    "relay": relay_fanout.main,
    "latency": latency.main,
    "history": history.main,
    "agent": agent.main,
    "gateway": gateway.main,
    "context": context.main,
    "sandbox": sandbox.main,
    "rules": rules.main,
    "knative": knative.main,
    "flink": flink.main,
    "alerts": alerts.main,
    "workspace": workspace.main,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, float]] = {}
    start = time.monotonic()
    for name in chosen:
        results[name] = BENCHES[name]()
        print()
    print(f"targets (finished in {time.monotonic() - start:.0f}s):")
    checks = []
    if "stream" in results:
        checks.append(
            ("(a) runner >= 150k ticks/s", results["stream"]["runner_ticks_s"] >= 150_000)
        )
    if "relay" in results:
        r = results["relay"]
        for n in (1, 10):
            checks.append(
                (f"(b) relay >= 0.8x raw proxy, {n} sub(s)", r[f"relay_{n}"] >= 0.8 * r[f"raw_{n}"])
            )
    if "latency" in results:
        for rate in (1_000, 10_000):
            checks.append(
                (f"(c) p99 < 20 ms at {rate:,}/s", results["latency"][f"p99_{rate}"] < 20)
            )
    if "history" in results:
        h = results["history"]
        checks.append(("(d) backfill of a year of 1m < 60 s", h["backfill_s"] < 60))
        checks.append(("(d) month query p50 < 150 ms", h["query_p50_ms"] < 150))
        checks.append(("(d) compaction leaves 1 file per partition", h["files_after"] == 1))
    if "agent" in results:
        a = results["agent"]
        checks.append(("(e) MCP tool call p50 < 5 ms", a["rt_p50_ms"] < 5))
        checks.append(("(e) cold start < 2 s", a["cold_s"] < 2))
        checks.append(("(e) idle RSS < 200 MB", a["rss_mb"] < 200))
        checks.append(("(e) 1M-bar backtest < 1 s", a["backtest_1m_s"] < 1))
    if "gateway" in results:
        g = results["gateway"]
        checks.append(("(f) gateway overhead p50 < 30 ms", g["overhead_p50_ms"] < 30))
        checks.append(("(f) cold first answer < 3 s", g["cold_first_answer_s"] < 3))
    if "context" in results:
        c = results["context"]
        grown = c["prompt_chars_200"] - c["prompt_chars_20"]
        cap = c["summary_cap_chars"]
        checks.append(("(f2) prompt of turn 200 <= turn 20 + summary cap", grown <= cap))
        checks.append(("(f2) harness overhead p50 < 30 ms", c["overhead_p50_last20_ms"] < 30))
    if results.get("sandbox"):
        added = results["sandbox"]["added_ms"]
        checks.append(("(g) sandbox isolation adds < 300 ms to start-up", added < 300))
    if "knative" in results:
        k = results["knative"]
        alone = k["provisioner_alone_ms"]
        checks.append(("(k) Knative provisioner, create → Ready (pod aside) < 200 ms", alone < 200))
    if "alerts" in results:
        a = results["alerts"]
        checks.append(("(r) every alert reaches the web socket", a["alerts_missed"] == 0))
    for label, ok in checks:
        print(f"  {'met ' if ok else 'MISSED'}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
