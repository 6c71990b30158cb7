"""The overload row of `make bench`: where a gateway should beat direct Triton.

`heavy` (~5 ms an execution, one instance, no batcher) has a capacity measured first (closed
loop). Then open-loop Poisson arrivals at twice that, each request with a 100 ms deadline, sent
directly and through a gateway with admission control (`--max-inflight 2 --max-queue 16`),
interleaved, each run once Triton has worked off what the one before left queued. Goodput:
answers that came back OK, per second (the deadline is each call's gRPC deadline, so an OK answer
came inside it). Direct, Triton queues every request and serves them late; the gateway sheds at
once what it cannot serve in time and serves the rest in time."""

from __future__ import annotations

import asyncio

from rich.console import Console

from gateway.local.processes import GatewayProcess
from loadtest.compare import Comparison, interleaved
from loadtest.runner import Result, run_scenario
from loadtest.scenario import RequestMix, Scenario, TensorSpec

__all__ = ["DEADLINE_S", "GATEWAY_FLAGS", "capacity", "drained", "overload_row"]

DEADLINE_S = 0.1
GATEWAY_FLAGS = ("--max-inflight", "2", "--max-queue", "16")
_HEAVY = RequestMix(model="heavy", inputs={"INPUT0": TensorSpec(shape=[1, 16])}, keys=10_000)


def capacity(triton: str, duration_s: float) -> float:
    """Requests per second `heavy` serves with a few in flight, directly."""
    closed = Scenario(name="capacity", concurrency=4, requests=[_HEAVY], duration_s=duration_s, warmup_s=1.0)
    return asyncio.run(run_scenario(closed, triton)).throughput


async def drained(triton: str, timeout_s: float = 120.0) -> None:
    """Wait until Triton has worked off what an earlier run left queued: requests whose callers
    gave up still execute, and would slow the next run down."""
    probe = Scenario(name="probe", concurrency=1, requests=[_HEAVY], duration_s=0.2, warmup_s=0.0, timeout_s=5.0)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        result = await run_scenario(probe, triton)
        if result.codes["OK"] and result.percentile_ms(99) < 20:
            return
        await asyncio.sleep(0.5)


def _row(comparison: Comparison[Result], offered: float, served: float) -> dict[str, object]:
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    direct = mean([r.throughput for r in comparison.direct])
    gateway = mean([r.throughput for r in comparison.gateway])
    shed = sum(r.codes["RESOURCE_EXHAUSTED"] for r in comparison.gateway)
    late = {side: sum(r.codes["DEADLINE_EXCEEDED"] for r in runs)
            for side, runs in (("direct", comparison.direct), ("gateway", comparison.gateway))}  # fmt: skip
    return comparison.summary() | {
        "offered_rps": round(offered, 1), "capacity_rps": round(served, 1),
        "direct_goodput_rps": round(direct, 1), "gateway_goodput_rps": round(gateway, 1),
        "goodput_ratio": round(gateway / direct, 2) if direct else None,
        "gateway_goodput_of_capacity": round(gateway / served, 2) if served else None,
        "direct_accepted_p99_ms": round(mean([r.accepted_percentile_ms(99) for r in comparison.direct]), 1),
        "gateway_accepted_p99_ms": round(mean([r.accepted_percentile_ms(99) for r in comparison.gateway]), 1),
        "gateway_shed": shed, "deadline_exceeded": late,
    }  # fmt: skip


def overload_row(
    console: Console, triton: str, gateway: GatewayProcess, rounds: int, duration_s: float
) -> dict[str, object]:
    served = capacity(triton, min(duration_s, 3.0))
    offered = 2 * served
    scenario = Scenario(
        name=f"overload: heavy at 2x capacity, {DEADLINE_S * 1000:.0f} ms deadline (--max-inflight 2 --max-queue 16)",
        mode="open", arrivals="poisson", rate=offered, timeout_s=DEADLINE_S, requests=[_HEAVY],
        duration_s=duration_s, warmup_s=1.0, connections=4,
    )  # fmt: skip
    console.print(f"[bold]{scenario.name}[/]: capacity {served:.0f}/s, offered {offered:.0f}/s, {rounds} rounds")

    async def measure(target: str) -> Result:
        await drained(triton)
        return await run_scenario(scenario, target)

    assert gateway.process is not None
    comparison = asyncio.run(interleaved(scenario.name, measure, triton, gateway.address, gateway.process.pid, rounds))
    return _row(comparison, offered, served)
