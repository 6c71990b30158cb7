"""The same scenario against Triton directly and through the gateway, interleaved (A B A B ...),
so both see the same machine; ratios, and the gateway's CPU per request (from its process)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import psutil

from loadtest.process_usage import cpu_seconds
from loadtest.runner import Result, run_scenario
from loadtest.scenario import Scenario

__all__ = ["Comparison", "Measured", "compare", "interleaved"]


class Measured(Protocol):
    """One run's figures: `loadtest.runner.Result`, or a `loadtest.perf_analyzer` run."""

    @property
    def throughput(self) -> float: ...

    @property
    def requests(self) -> int: ...

    @property
    def codes(self) -> Counter[str]: ...

    @property
    def cache(self) -> Counter[str]: ...

    def percentile_ms(self, percentile: float) -> float: ...


Run = TypeVar("Run", bound=Measured)


@dataclass
class Comparison(Generic[Run]):
    scenario: str
    baseline: str = "direct Triton"  # what the "direct" figures measured
    direct: list[Run] = field(default_factory=list)
    gateway: list[Run] = field(default_factory=list)
    gateway_cpu_s: float | None = None  # over the gateway's runs; None when no process was given

    @staticmethod
    def _mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    @staticmethod
    def _per_request_us(seconds: float | None, requests: int) -> float | None:
        return round(1e6 * seconds / requests, 1) if seconds is not None and requests else None

    def summary(self) -> dict[str, object]:
        direct_rps = self._mean([r.throughput for r in self.direct])
        gateway_rps = self._mean([r.throughput for r in self.gateway])
        gateway_requests = sum(r.codes["OK"] for r in self.gateway)
        outcomes = sum((r.cache for r in self.gateway), Counter[str]())
        hits = outcomes["hit-l1"] + outcomes["hit-l2"]

        def p(results: list[Run], percentile: float) -> float:
            return self._mean([r.percentile_ms(percentile) for r in results])

        return {
            "scenario": self.scenario,
            "baseline": self.baseline,
            "direct_rps": round(direct_rps, 1),
            "gateway_rps": round(gateway_rps, 1),
            "ratio": round(gateway_rps / direct_rps, 3) if direct_rps else None,
            "direct_p50_ms": round(p(self.direct, 50), 3), "gateway_p50_ms": round(p(self.gateway, 50), 3),
            "added_p50_ms": round(p(self.gateway, 50) - p(self.direct, 50), 3),
            "direct_p99_ms": round(p(self.direct, 99), 3), "gateway_p99_ms": round(p(self.gateway, 99), 3),
            "gateway_cpu_us_per_request": self._per_request_us(self.gateway_cpu_s, gateway_requests),
            "gateway_cache_hit_ratio": round(hits / outcomes.total(), 3) if outcomes.total() else None,
            "errors": {"direct": sum(r.requests - r.codes["OK"] for r in self.direct),
                       "gateway": sum(r.requests - r.codes["OK"] for r in self.gateway)},
        }  # fmt: skip


async def interleaved(
    name: str,
    measure: Callable[[str], Awaitable[Run]],
    direct: str,
    gateway: str,
    gateway_pid: int | None,
    rounds: int = 2,
    baseline: str = "direct Triton",
) -> Comparison[Run]:
    """`measure` run against `direct` then `gateway`, `rounds` times; the gateway's CPU taken over
    its own runs (its process and workers)."""
    comparison: Comparison[Run] = Comparison(name, baseline)
    process = psutil.Process(gateway_pid) if gateway_pid else None
    for _ in range(rounds):
        comparison.direct.append(await measure(direct))
        before = cpu_seconds(process) if process else 0.0
        comparison.gateway.append(await measure(gateway))
        if process is not None:
            comparison.gateway_cpu_s = (comparison.gateway_cpu_s or 0.0) + cpu_seconds(process) - before
        await asyncio.sleep(0)
    return comparison


async def compare(
    scenario: Scenario,
    direct: str,
    gateway: str,
    gateway_pid: int | None,
    rounds: int = 2,
    baseline: str = "direct Triton",
) -> Comparison[Result]:
    """The scenario through the Python load generator, interleaved (see `interleaved`)."""

    async def measure(target: str) -> Result:
        return await run_scenario(scenario, target)

    return await interleaved(scenario.name, measure, direct, gateway, gateway_pid, rounds, baseline)
