"""`loadtest.compare.interleaved`: A B A B order, and the summary's ratios from the runs."""

from __future__ import annotations

import asyncio
from collections import Counter

from loadtest.compare import interleaved
from loadtest.perf_analyzer import PerfAnalyzerRun


def _run(target: str, throughput: float, p50_ms: float, codes: Counter[str], cache: Counter[str]) -> PerfAnalyzerRun:
    latency_us = {50.0: p50_ms * 1000, 99.0: p50_ms * 2000}
    return PerfAnalyzerRun(target, 5.0, throughput, latency_us, codes, cache)


def test_runs_alternate_and_the_summary_compares_their_means() -> None:
    order: list[str] = []
    runs = {
        "direct": [_run("direct", 1000, 2.0, Counter(OK=5000), Counter()),
                   _run("direct", 1200, 2.0, Counter(OK=6000), Counter())],
        "gateway": [_run("gateway", 500, 3.0, Counter(OK=2500, UNAVAILABLE=1), Counter({"hit-l1": 3, "miss": 1})),
                    _run("gateway", 600, 5.0, Counter(OK=3000), Counter({"miss": 4}))],
    }  # fmt: skip

    async def measure(target: str) -> PerfAnalyzerRun:
        order.append(target)
        return runs[target][order.count(target) - 1]

    comparison = asyncio.run(interleaved("s", measure, "direct", "gateway", None, rounds=2, baseline="b"))
    summary = comparison.summary()

    assert order == ["direct", "gateway", "direct", "gateway"]
    assert summary["scenario"] == "s" and summary["baseline"] == "b"
    assert summary["direct_rps"] == 1100.0 and summary["gateway_rps"] == 550.0 and summary["ratio"] == 0.5
    assert summary["added_p50_ms"] == 2.0 and summary["gateway_p99_ms"] == 8.0
    assert summary["gateway_cache_hit_ratio"] == 0.375
    assert summary["errors"] == {"direct": 0, "gateway": 1}
    assert summary["gateway_cpu_us_per_request"] is None  # no process given: no CPU taken
