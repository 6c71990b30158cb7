"""The load generator: closed loop (fixed concurrency) or open loop (constant or Poisson arrivals).

Open-loop latency is measured from each request's *intended* send time, so a slow server cannot
hide its queueing by slowing the generator down (coordinated omission is corrected). Latencies go
into an HDR histogram (microseconds, 3 significant digits).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc
from hdrh.histogram import HdrHistogram

from loadtest.payloads import Payloads
from loadtest.scenario import Scenario

__all__ = ["Result", "run_scenario"]

_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_MAX_US = 60_000_000


@dataclass
class Result:
    scenario: str
    target: str
    seconds: float
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))
    accepted: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_US, 3))  # OK answers alone
    codes: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)  # `x-cache` of the answers, when a gateway sent one
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, latency s)

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    @property
    def throughput(self) -> float:
        return self.codes["OK"] / self.seconds if self.seconds else 0.0

    def percentile_ms(self, percentile: float) -> float:
        return float(self.histogram.get_value_at_percentile(percentile)) / 1000.0

    def accepted_percentile_ms(self, percentile: float) -> float:
        """Of the requests answered OK: what a caller who got an answer waited."""
        return float(self.accepted.get_value_at_percentile(percentile)) / 1000.0

    def summary(self) -> dict[str, object]:
        return {
            "scenario": self.scenario, "target": self.target, "seconds": round(self.seconds, 3),
            "requests": self.requests, "ok": self.codes["OK"], "throughput_rps": round(self.throughput, 1),
            "p50_ms": self.percentile_ms(50), "p90_ms": self.percentile_ms(90), "p99_ms": self.percentile_ms(99),
            "p999_ms": self.percentile_ms(99.9), "max_ms": self.histogram.get_max_value() / 1000.0,
            "errors": {code: n for code, n in self.codes.items() if code != "OK"},
            "cache": dict(self.cache),
        }  # fmt: skip


RawCall: TypeAlias = "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]"


async def _one(call: RawCall, body: bytes, timeout: float, metadata: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    """The status code name, and the `x-cache` outcome ('' without one)."""
    pending = call(body, timeout=timeout, metadata=metadata)
    try:
        await pending
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, ""
    trailing = await pending.trailing_metadata()
    return "OK", next((str(value) for key, value in trailing or () if key == "x-cache"), "")


async def run_scenario(
    scenario: Scenario, target: str | None = None, on_progress: Callable[[float], None] | None = None
) -> Result:
    """Run the scenario (warm-up excluded from the result) against `target` or its own target,
    in this process or shared among `scenario.processes` processes (results merged)."""
    address = target or scenario.target
    if scenario.processes == 1:
        return await _run_here(scenario, address, on_progress)
    shares = _shares(scenario)
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _run_part, share, address) for share in shares))
    merged = Result(scenario.name, address, scenario.duration_s)
    for encoded, accepted, codes, cache, timeline in parts:
        merged.histogram.decode_and_add(encoded)
        merged.accepted.decode_and_add(accepted)
        merged.codes.update(codes)
        merged.cache.update(cache)
        merged.timeline.extend(timeline)
    merged.timeline.sort()
    return merged


def _shares(scenario: Scenario) -> list[Scenario]:
    """One scenario per process: concurrency (closed loop) or rate (open loop) divided among them."""
    count = min(scenario.processes, scenario.concurrency) if scenario.mode == "closed" else scenario.processes
    shares = []
    for index in range(count):
        concurrency = scenario.concurrency // count + (index < scenario.concurrency % count)
        update = {"processes": 1, "concurrency": max(concurrency, 1), "rate": scenario.rate / count}
        shares.append(scenario.model_copy(update=update))
    return shares


Part: TypeAlias = tuple[bytes, bytes, dict[str, int], dict[str, int], list[tuple[float, float]]]


def _run_part(scenario: Scenario, address: str) -> Part:
    """In a load-generator process: run a share; what the parent merges (histograms travel encoded)."""
    result = asyncio.run(_run_here(scenario, address, None))
    return result.histogram.encode(), result.accepted.encode(), dict(result.codes), dict(result.cache), result.timeline


async def _run_here(scenario: Scenario, address: str, on_progress: Callable[[float], None] | None) -> Result:
    payloads = Payloads(scenario.requests)
    metadata = [tuple(mix.metadata.items()) for mix in scenario.requests]
    channels = [
        # round_robin: a target naming several servers ("ipv4:A,B") is spread over them request by
        # request, as a client-side load balancer would; one server is one server either way.
        grpc.aio.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.lb_policy_name", "round_robin")]
        )
        for _ in range(scenario.connections)
    ]
    calls = [channel.unary_unary(_METHOD, None, None) for channel in channels]
    result = Result(scenario.name, address, scenario.duration_s)
    started = time.perf_counter()
    measure_from = started + scenario.warmup_s
    end = measure_from + scenario.duration_s
    counter = 0

    def record(intended: float, code: str, cache: str) -> None:
        now = time.perf_counter()
        if intended < measure_from or intended >= end:
            return
        latency = now - intended
        result.codes[code] += 1
        if cache:
            result.cache[cache] += 1
        result.histogram.record_value(min(max(int(latency * 1e6), 1), _MAX_US))
        if code == "OK":
            result.accepted.record_value(min(max(int(latency * 1e6), 1), _MAX_US))
        result.timeline.append((intended - measure_from, latency))
        if on_progress is not None:
            on_progress(min((now - measure_from) / scenario.duration_s, 1.0))

    async def send(intended: float) -> None:
        nonlocal counter
        kind, body = payloads.draw()
        call = calls[counter % len(calls)]
        counter += 1
        record(intended, *await _one(call, body, scenario.timeout_s, metadata[kind]))

    try:
        if scenario.mode == "closed":

            async def worker() -> None:
                while time.perf_counter() < end:
                    await send(time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(scenario.concurrency)))
        else:
            pending: set[asyncio.Task[None]] = set()
            intended = started
            while intended < end:
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(send(intended))
                pending.add(task)
                task.add_done_callback(pending.discard)
                gap = 1.0 / scenario.rate
                intended += random.expovariate(scenario.rate) if scenario.arrivals == "poisson" else gap
            await asyncio.gather(*pending)
    finally:
        for channel in channels:
            await channel.close(None)
    return result
