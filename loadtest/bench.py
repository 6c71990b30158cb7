"""`make bench`: a real Triton, the gateway in front of it, each scenario compared with direct.

Scenarios (closed loop): `identity` FP32[16] at 16 in flight (throughput) and at 1 (added
latency), the 602 KB `image` at 16, the cache-hit path (one repeated `identity` request through a
gateway started with --cache, against the same request sent directly), `identity_batched` through
a gateway with --batching, and the headline: 16 clients on `heavy` (~5 ms per execution, no
dynamic batcher in Triton) with Zipf-repeated inputs, through a gateway with --cache --batching.
Yardsticks measured in the same run: the canned grpc.aio server (Python's inbound floor) and the
naive passthrough proxy (`loadtest.passthrough`), each against Triton and the gateway against each.
Two core threads against one (`--workers`) on the cache-hit path: with the Python generator, and
with perf_analyzer (`make perf-analyzer`), a connection per concurrency context. The plain-proxy
rows with perf_analyzer (`loadtest.proxies`): the gateway and nginx `grpc_pass`,
each against direct Triton; and the rows against the best-configured Triton (`loadtest.tuned_triton`:
Triton's own response cache, its dynamic batcher): the gateway's cache against Triton's cache, the
gateway's micro-batching in front of the dynamic batcher against the batcher alone. The
flow-control rows (`loadtest.fairness`): a flooding tenant beside a quiet one, four tenants of
equal demand, the lowest priority class flooding beside the highest, each against Triton's own
queue policy. Results: a JSON file and a Markdown table in the output folder, with the hardware recorded.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import TritonOptions, TritonProcess
from loadtest import BENCH_THREADS
from loadtest.compare import compare, interleaved
from loadtest.fairness import fairness_rows
from loadtest.generative import generative_rows
from loadtest.instructions import instruction_rows
from loadtest.overload import GATEWAY_FLAGS, overload_row
from loadtest.perf_analyzer import BINARY, PerfAnalyzerRun, measure
from loadtest.plot import plot_bench
from loadtest.proxies import forward_cpu_rows, proxy_rows
from loadtest.reference_server import running
from loadtest.replicas import shared_cache_row, sick_replica_row
from loadtest.report import hardware, table, write_json
from loadtest.scenario import RequestMix, Scenario, TensorSpec

__all__ = ["run_bench"]


PLAIN: tuple[str, ...] = ()
CACHED = ("--cache",)
BATCHING = ("--batching",)
HEADLINE = ("--cache", "--batching")


def _scenarios(duration_s: float) -> list[tuple[Scenario, tuple[str, ...]]]:
    """(scenario, the flags of the gateway it goes through)."""
    identity = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=10_000, zipf_s=1.0001)
    image = RequestMix(model="image", inputs={"INPUT0": TensorSpec(shape=[1, 3, 224, 224])}, keys=4)
    repeated = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=1)
    batched = RequestMix(model="identity_batched", inputs={"INPUT0": TensorSpec(shape=[1, 16])}, keys=10_000)
    # Zipf over 100,000 inputs: about half of a few thousand requests repeat an earlier one.
    heavy = RequestMix(model="heavy", inputs={"INPUT0": TensorSpec(shape=[1, 16])}, keys=100_000, zipf_s=1.0001)

    def scenario(name: str, concurrency: int, mix: RequestMix) -> Scenario:
        return Scenario(name=name, concurrency=concurrency, requests=[mix], duration_s=duration_s, warmup_s=1.0)

    return [
        (scenario("headline: heavy 5 ms, Zipf, c=16 (--cache --batching)", 16, heavy), HEADLINE),
        (scenario("heavy 5 ms, Zipf, c=16, batching alone (--batching)", 16, heavy), BATCHING),
        (scenario("identity c=16", 16, identity), PLAIN),
        (scenario("identity c=1", 1, identity), PLAIN),
        (scenario("identity_batched c=16 (--batching)", 16, batched), BATCHING),
        (scenario("image 602KB c=16", 16, image), PLAIN),
        (scenario("cache hit c=16 (--cache)", 16, repeated), CACHED),
    ]


def _workers_scenario(duration_s: float) -> Scenario:
    """The cache-hit path from two load-generator processes with four connections each."""
    repeated = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=1)
    return Scenario(
        name="cache hit c=16, 2 core threads vs 1 (--cache --workers 2)", concurrency=16, requests=[repeated],
        duration_s=duration_s, warmup_s=1.5, processes=2, connections=4,
    )  # fmt: skip


def _table_markdown(rows: list[dict[str, object]]) -> str:
    columns = list(dict.fromkeys(key for row in rows for key in row))  # some rows have more
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _gateway(triton: str, flags: tuple[str, ...], log: Path) -> GatewayProcess:
    """A gateway on `BENCH_THREADS` unless `flags` say otherwise (the last --workers wins)."""
    args = ["--upstream", triton, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING", *BENCH_THREADS]
    args += flags
    return GatewayProcess(args, log)


def run_bench(out: Path, duration_s: float = 5.0, rounds: int = 2, only: str | None = None) -> int:
    """Every scenario (or those whose name contains `only`), each through a gateway of its own
    flags, started fresh (a cache filled by an earlier scenario would flatter a later one)."""
    console = Console(width=160)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    scenarios = [(s, flags) for s, flags in _scenarios(duration_s) if only is None or only in s.name]
    try:
        triton.wait_ready()
        rows = []
        for index, (scenario, flags) in enumerate(scenarios):
            gateway = _gateway(triton.options.grpc_target, flags, workdir / f"gateway-{index}.log")
            gateway.start()
            try:
                rows.append(_compare(console, scenario, triton.options.grpc_target, gateway, rounds, duration_s))
            finally:
                gateway.stop()
        if only is None or "overload" in only:
            gateway = _gateway(triton.options.grpc_target, GATEWAY_FLAGS, workdir / "gateway-overload.log")
            gateway.start()
            try:
                rows.append(overload_row(console, triton.options.grpc_target, gateway, rounds, duration_s))
            finally:
                gateway.stop()
        rows += fairness_rows(console, workdir, rounds, duration_s, lambda name: only is None or only in name)
        for name, row in (("sick replica", sick_replica_row), ("sharing a cache", shared_cache_row)):
            if only is None or only in name:
                rows.append(row(console, workdir, rounds, duration_s))
        workers = _workers_scenario(duration_s)
        if only is None or only in workers.name:
            rows += _compare_workers(console, workers, triton.options.grpc_target, workdir, rounds)
        wanted: Callable[[str], bool] = lambda name: only is None or only in name  # noqa: E731
        rows += generative_rows(console, triton.options.grpc_target, workdir, rounds, wanted)
        rows += proxy_rows(console, triton.options.grpc_target, workdir, rounds, wanted)
        rows += forward_cpu_rows(console, triton.options.grpc_target, workdir, rounds, wanted)
        rows += instruction_rows(console, triton.options.grpc_target, workdir, wanted)
        for stick in _yardsticks(triton.options.grpc_target):
            if only is None or only in stick.scenario or only in stick.versus:
                rows += _compare_yardstick(console, stick, triton.options.grpc_target, workdir, rounds, duration_s)
        console.print(table("gateway vs direct Triton (same run, interleaved)", rows))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        write_json(out / f"bench-{stamp}.json", {"duration_s": duration_s, "rounds": rounds, "results": rows})
        (out / f"bench-{stamp}.md").write_text(f"hardware: {hardware()}\n\n" + _table_markdown(rows))
        plot_bench(rows, out / f"bench-{stamp}.png")
        console.print(f"results in {out}/bench-{stamp}.json, .md and .png")
        return 0
    finally:
        triton.stop()


def _compare(
    console: Console, scenario: Scenario, direct: str, gateway: GatewayProcess, rounds: int, duration_s: float
) -> dict[str, object]:
    assert gateway.process is not None
    console.print(f"[bold]{scenario.name}[/]: direct vs gateway, {rounds} rounds of {duration_s:.0f} s each")
    result = asyncio.run(compare(scenario, direct, gateway.address, gateway.process.pid, rounds))
    return result.summary()


@dataclass(frozen=True, slots=True)
class Yardstick:
    """A reference server measured against Triton, then a gateway measured against it."""

    label: str  # as the baseline of the second row
    command: tuple[str, ...]  # `python -m` arguments
    scenario: str  # the first row's name
    versus: str  # the second row's name
    keys: int  # distinct inputs (1: one repeated request)
    gateway_flags: tuple[str, ...]


def _yardsticks(triton: str) -> list[Yardstick]:
    return [
        # Python's inbound floor, and the caching gateway's hit path against it.
        Yardstick("canned floor", ("loadtest.canned",), "canned grpc.aio floor c=16",
                  "cache hit c=16 vs the canned floor (--cache)", 1, CACHED),
        # The simplest forwarding proxy, and what the plain gateway's features cost over it.
        Yardstick("naive passthrough", ("loadtest.passthrough", "--upstream", triton),
                  "naive passthrough identity c=16", "identity c=16 vs the naive passthrough", 10_000, PLAIN),
    ]  # fmt: skip


def _compare_yardstick(
    console: Console, stick: Yardstick, triton: str, workdir: Path, rounds: int, duration_s: float
) -> list[dict[str, object]]:
    identity = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=stick.keys)
    alone = Scenario(name=stick.scenario, concurrency=16, requests=[identity], duration_s=duration_s)
    versus = alone.model_copy(update={"name": stick.versus})
    gateway = _gateway(triton, stick.gateway_flags, workdir / f"gateway-{stick.command[0]}.log")
    with running(*stick.command) as (reference, process):
        console.print(f"[bold]{alone.name}[/]: direct vs {stick.label}, {rounds} rounds")
        rows = [asyncio.run(compare(alone, triton, reference, process.pid, rounds)).summary()]
        gateway.start()
        try:
            assert gateway.process is not None
            console.print(f"[bold]{versus.name}[/]: {stick.label} vs gateway, {rounds} rounds")
            pid = gateway.process.pid
            rows.append(asyncio.run(compare(versus, reference, gateway.address, pid, rounds, stick.label)).summary())
        finally:
            gateway.stop()
    return rows


def _compare_workers(
    console: Console, scenario: Scenario, triton: str, workdir: Path, rounds: int
) -> list[dict[str, object]]:
    """A gateway on one core thread as the baseline, one on two measured:
    with the Python generator, then with perf_analyzer, a connection per concurrency context, whose
    C++ client leaves the gateway more of the two cores."""
    one = _gateway(triton, CACHED, workdir / "gateway-1-worker.log")
    two = _gateway(triton, (*CACHED, "--workers", "2"), workdir / "gateway-2-workers.log")
    one.start()
    two.start()
    try:
        assert two.process is not None
        console.print(f"[bold]{scenario.name}[/]: 1 worker vs 2 workers, {rounds} rounds")
        pid = two.process.pid
        rows = [asyncio.run(compare(scenario, one.address, two.address, pid, rounds, "1 worker")).summary()]

        async def perf_analyzer(target: str) -> PerfAnalyzerRun:
            return await asyncio.to_thread(measure, target, "identity", "INPUT0:16", 16, connection_per_context=True)

        name = "cache hit c=16, 2 core threads vs 1, perf_analyzer (a connection per context)"
        if not BINARY.exists():  # `gateway bench` run without `make bench`: the other rows still count
            console.print(f"[yellow]{name}: skipped, {BINARY} is missing (make perf-analyzer)[/]")
            return rows
        console.print(f"[bold]{name}[/]: 1 worker vs 2 workers, {rounds} rounds")
        try:
            native = asyncio.run(interleaved(name, perf_analyzer, one.address, two.address, pid, rounds, "1 worker"))
        except (RuntimeError, subprocess.SubprocessError) as exc:  # reported; the other rows still count
            console.print(f"[red]{name}: {exc}[/]")
            return rows
        return [*rows, native.summary()]
    finally:
        two.stop()
        one.stop()
