"""The bench's two-Triton rows, where one gateway in front of both should beat clients that
spread their requests over both themselves (round robin, request by request, as a client-side
load balancer does: the runner's `ipv4:A,B` targets):

- a sick replica: one Triton ten times slower than the other (`heavy` at ~50 ms an execution);
  the gateway's pool (P2C weighing requests under way by latency, outlier ejection) against round
  robin. Without hedging: with two endpoints a hedge can only go to the sick one, and when the
  healthy one's own queueing passes the hedge delay, hedges pile up in the sick one's queue
  (Triton executes the abandoned ones too): measured, a 25 ms hedge took p99 from 0.2 s to 3-4 s;
- replicas sharing a cache: two Tritons, each with its own response cache, against the gateway's
  one cache in front of both, on a Zipf stream over 10,000 distinct inputs of `heavy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import yaml
from rich.console import Console
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from gateway.local.triton import DEFAULT_MODEL_REPOSITORY, TritonProcess
from loadtest import BENCH_THREADS
from loadtest.compare import interleaved
from loadtest.runner import Result, run_scenario
from loadtest.scenario import RequestMix, Scenario, TensorSpec
from loadtest.tuned_triton import running_triton, running_tuned_triton, tuned_repository

__all__ = ["shared_cache_row", "sick_replica_row"]

_HEAVY = RequestMix(model="heavy", inputs={"INPUT0": TensorSpec(shape=[1, 16])}, keys=10_000, zipf_s=1.0001)
SLOWDOWN = 10


def _spread(*tritons: TritonProcess) -> str:
    return "ipv4:" + ",".join(t.options.grpc_target for t in tritons)


def _sick_repository(folder: Path) -> Path:
    """`heavy` alone, each execution SLOWDOWN times longer."""
    repository = folder / "sick-models"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "heavy", repository / "heavy")
    model = repository / "heavy" / "1" / "model.py"
    text = model.read_text()
    cost = float(re.search(r"COST_S = ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
    model.write_text(text.replace(f"COST_S = {cost}", f"COST_S = {cost * SLOWDOWN}"))
    return repository


@contextlib.contextmanager
def _gateway(folder: Path, name: str, endpoints: list[str], *flags: str, **pool: object) -> Iterator[GatewayProcess]:
    config = {"pools": {"main": {"endpoints": endpoints, **pool}}, "default_pool": "main"}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    args = [
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        "WARNING",
        *BENCH_THREADS,
        *flags,
    ]
    gateway = GatewayProcess(args, folder / f"{name}.log")
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def _scenario(name: str, duration_s: float) -> Scenario:
    return Scenario(name=name, concurrency=16, requests=[_HEAVY], duration_s=duration_s, warmup_s=1.0, connections=4)


def sick_replica_row(console: Console, workdir: Path, rounds: int, duration_s: float) -> dict[str, object]:
    scenario = _scenario(f"a sick replica: heavy on two Tritons, one {SLOWDOWN}x slower, c=16", duration_s)
    with (
        running_triton(workdir, DEFAULT_MODEL_REPOSITORY, "healthy-triton") as healthy,
        running_triton(workdir, _sick_repository(workdir), "sick-triton") as sick,
        _gateway(workdir, "gateway-sick", [healthy.options.grpc_target, sick.options.grpc_target],
                 ) as gateway,
    ):  # fmt: skip
        console.print(f"[bold]{scenario.name}[/]: round robin over both vs the gateway's pool, {rounds} rounds")

        async def measure(target: str) -> Result:
            return await run_scenario(scenario, target)

        assert gateway.process is not None
        comparison = asyncio.run(
            interleaved(scenario.name, measure, _spread(healthy, sick), gateway.address, gateway.process.pid, rounds,
                        baseline="round robin over both")
        )  # fmt: skip
    row = comparison.summary()
    direct_p99, gateway_p99 = row["direct_p99_ms"], row["gateway_p99_ms"]
    assert isinstance(direct_p99, float) and isinstance(gateway_p99, float)
    return row | {"p99_ratio": round(gateway_p99 / direct_p99, 3) if direct_p99 else None}


def _cache_hits(*tritons: TritonProcess) -> tuple[int, int]:
    """`heavy`'s (cache hits, inferences) summed over the Tritons' own statistics."""
    hits = inferences = 0
    for triton in tritons:
        with grpc.insecure_channel(triton.options.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            answer = stub.ModelStatistics(pb.ModelStatisticsRequest(name="heavy"), timeout=10)
        for entry in answer.model_stats:
            hits += entry.inference_stats.cache_hit.count
            inferences += entry.inference_stats.success.count
    return hits, inferences


def shared_cache_row(console: Console, workdir: Path, rounds: int, duration_s: float) -> dict[str, object]:
    scenario = _scenario("replicas sharing a cache: heavy, Zipf over 10,000 inputs, c=16", duration_s)
    one, two = workdir / "cache-a", workdir / "cache-b"
    one.mkdir(exist_ok=True)
    two.mkdir(exist_ok=True)
    # The gateway's Tritons are of their own, with the dynamic batcher and without a cache: a
    # miss of the gateway must not find an answer the direct runs left in the tuned ones' caches.
    batched = tuned_repository(workdir, cache=False)
    with (
        running_tuned_triton(one) as first,
        running_tuned_triton(two) as second,
        running_triton(workdir, batched, "batched-a") as plain_a,
        running_triton(workdir, batched, "batched-b") as plain_b,
        _gateway(workdir, "gateway-shared-cache", [plain_a.options.grpc_target, plain_b.options.grpc_target],
                 "--cache") as gateway,
    ):  # fmt: skip
        console.print(f"[bold]{scenario.name}[/]: each Triton's own cache vs one gateway cache, {rounds} rounds")
        direct_hits: list[float] = []

        async def measure(target: str) -> Result:
            if target != gateway.address:
                before = _cache_hits(first, second)
            result = await run_scenario(scenario, target)
            if target != gateway.address:
                after = _cache_hits(first, second)
                served = after[1] - before[1]
                direct_hits.append((after[0] - before[0]) / served if served else 0.0)
            return result

        assert gateway.process is not None
        comparison = asyncio.run(
            interleaved(scenario.name, measure, _spread(first, second), gateway.address, gateway.process.pid, rounds,
                        baseline="each Triton's own cache, round robin")
        )  # fmt: skip
    direct = round(sum(direct_hits) / len(direct_hits), 3) if direct_hits else None
    return comparison.summary() | {"direct_cache_hit_ratio": direct}
