"""The bench's perf_analyzer rows (C++, a connection per context), each against direct Triton in the
same run, interleaved, with each proxy's CPU per request from its own process: the plain-proxy
rows (the gateway and Debian's nginx `grpc_pass` against plain Triton),
and the rows against the best-configured Triton a user would pick (`loadtest.tuned_triton`): the
gateway's cache against Triton's own response cache, the gateway's micro-batching in front of
Triton's dynamic batcher against the batcher alone. perf_analyzer sends one input (random, made
once) over and over: every request after the first is a cache hit, in both."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from rich.console import Console

from gateway.local.processes import GatewayProcess
from loadtest import BENCH_THREADS
from loadtest.compare import interleaved
from loadtest.nginx import running_nginx
from loadtest.perf_analyzer import BINARY, PerfAnalyzerRun, measure
from loadtest.process_usage import cpu_seconds
from loadtest.tuned_triton import running_tuned_triton

__all__ = ["cpu_row", "forward_cpu_rows", "proxy_rows", "turns"]

IDENTITY = ("identity", "INPUT0:16")
IMAGE = ("image", "INPUT0:1,3,224,224")
BATCHED = ("identity_batched", "INPUT0:16")


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    proxy: str  # gateway | nginx | gateway+features | gateway+cache | gateway+batching
    model: tuple[str, str]  # model, perf_analyzer --shape
    concurrency: int
    # The direct baseline: "plain" Triton, or "tuned" (response cache on, dynamic batcher on).
    direct: str = "plain"


ROWS = (
    Row("gateway: identity c=16 (perf_analyzer)", "gateway", IDENTITY, 16),
    Row("gateway: identity c=1 (perf_analyzer)", "gateway", IDENTITY, 1),
    Row("gateway: image 602KB c=16 (perf_analyzer)", "gateway", IMAGE, 16),
    Row(
        "gateway + rules, sticky key, metrics, access log: identity c=16 (perf_analyzer)",
        "gateway+features",
        IDENTITY,
        16,
    ),
    Row("nginx grpc_pass: identity c=16 (perf_analyzer)", "nginx", IDENTITY, 16),
    Row("nginx grpc_pass: identity c=1 (perf_analyzer)", "nginx", IDENTITY, 1),
    Row("nginx grpc_pass: image 602KB c=16 (perf_analyzer)", "nginx", IMAGE, 16),
    Row(
        "cache hits: gateway --cache vs Triton's own response cache, identity c=16 (perf_analyzer)",
        "gateway+cache",
        IDENTITY,
        16,
        direct="tuned",
    ),
    Row(
        "gateway --batching in front of Triton's dynamic batcher vs the batcher alone, "
        "identity_batched c=16 (perf_analyzer)",
        "gateway+batching",
        BATCHED,
        16,  # identity_batched has the dynamic batcher in the plain repository too (no cache)
    ),
)


def _features(triton: str) -> dict[str, object]:
    """`identity` behind the per-request work a real route has: two variants by weight, an ordered
    header rule and a sticky key (perf_analyzer sends neither header, so both are looked up and
    the weights decide), with metrics and an access log of every request."""
    variants = [{"name": name, "pool": "main", "version": "1", "weight": 50} for name in ("blue", "green")]
    route = {"variants": variants, "match": [{"header": "x-tier", "prefix": "gold", "variant": "green"}],
             "sticky_header": "x-user"}  # fmt: skip
    return {"pools": {"main": {"endpoints": [triton]}}, "default_pool": "main", "routes": {"identity": route}}


@contextlib.contextmanager
def _proxy(kind: str, triton: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """The proxy's address and the PID whose CPU it spends."""
    if kind == "nginx":
        with running_nginx(triton) as (address, process):
            yield address, process.pid
        return
    args = ["--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING", *BENCH_THREADS]
    if kind == "gateway+features":
        config = workdir / "features.yaml"
        config.write_text(yaml.safe_dump(_features(triton)))
        args += ["--config", str(config), "--metrics-port", "0", "--access-log", str(workdir / "access.jsonl")]
    else:
        args += ["--upstream", triton]
    args += {"gateway+cache": ["--cache"], "gateway+batching": ["--batching"]}.get(kind, [])
    with GatewayProcess(args, workdir / f"gateway-{kind}.log").serving() as served:
        yield served


def proxy_rows(
    console: Console, triton: str, workdir: Path, rounds: int, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    """`triton`: plain Triton, behind every proxy; the best-configured one, a baseline of some
    rows, is started here when one of them is wanted."""
    rows: list[dict[str, object]] = []
    selected = [row for row in ROWS if wanted(row.name)]
    if selected and not BINARY.exists():
        console.print(f"[yellow]perf_analyzer rows skipped: {BINARY} is missing (make perf-analyzer)[/]")
        return rows
    with contextlib.ExitStack() as stack:
        tuned = ""
        if any(row.direct == "tuned" for row in selected):
            tuned = stack.enter_context(running_tuned_triton(workdir)).options.grpc_target
        for row in selected:
            rows.extend(_row(console, row, triton, tuned, workdir, rounds))
    return rows


def _row(console: Console, row: Row, triton: str, tuned: str, workdir: Path, rounds: int) -> list[dict[str, object]]:
    """One row, compared interleaved (none when it could not be measured: reported)."""
    model, shape = row.model

    async def perf_analyzer(target: str) -> PerfAnalyzerRun:
        return await asyncio.to_thread(measure, target, model, shape, row.concurrency, connection_per_context=True)

    direct = tuned if row.direct == "tuned" else triton
    console.print(f"[bold]{row.name}[/]: direct ({row.direct} Triton) vs {row.proxy}, {rounds} rounds")
    try:
        with _proxy(row.proxy, triton, workdir) as (address, pid):
            comparison = asyncio.run(interleaved(row.name, perf_analyzer, direct, address, pid, rounds))
    except (RuntimeError, FileNotFoundError, subprocess.SubprocessError) as exc:  # reported; others count
        console.print(f"[red]{row.name}: {exc}[/]")
        return []
    return [comparison.summary()]


CPU_WORKLOADS = (("identity c=16", IDENTITY, 16), ("identity c=1", IDENTITY, 1), ("image 602KB c=16", IMAGE, 16))


def _cpu_name(workload: str) -> str:
    return f"bare forward, CPU a request: {workload} (perf_analyzer)"


def turns(rounds: int) -> list[str]:
    """Who is measured when: gateway, nginx, then nginx, gateway, and so on (a drift of the machine
    during the runs falls on both alike)."""
    pairs = (("gateway", "nginx"), ("nginx", "gateway"))
    return [kind for turn in range(rounds) for kind in pairs[turn % 2]]


def cpu_row(workload: str, spent: dict[str, tuple[float, int]]) -> dict[str, object]:
    """`spent`: for "gateway" and "nginx", the CPU seconds of their runs and the requests served."""
    per_request = {kind: round(1e6 * seconds / max(requests, 1), 1) for kind, (seconds, requests) in spent.items()}
    return {"scenario": _cpu_name(workload), "baseline": "nginx grpc_pass",
            "gateway_cpu_us_per_request": per_request["gateway"], "nginx_cpu_us_per_request": per_request["nginx"],
            "cpu_ratio": round(per_request["gateway"] / per_request["nginx"], 3)}  # fmt: skip


def forward_cpu_rows(
    console: Console, triton: str, workdir: Path, rounds: int, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    """The bare forward's CPU a request, the gateway's and nginx's side by side: both up in front
    of the same Triton and measured in turn (`turns`), `rounds` runs each. (Taken from the separate
    rows above, minutes apart on this shared machine, the ratio moved by ±25% from run to run.)"""
    selected = [workload for workload in CPU_WORKLOADS if wanted(_cpu_name(workload[0]))]
    if not selected or not BINARY.exists():
        return []
    rows: list[dict[str, object]] = []
    try:
        with _proxy("gateway", triton, workdir) as gateway, _proxy("nginx", triton, workdir) as nginx:
            proxies = {"gateway": gateway, "nginx": nginx}
            for workload, (model, shape), concurrency in selected:
                console.print(f"[bold]{_cpu_name(workload)}[/]: gateway and nginx in turn, {rounds} runs each")
                spent = {kind: (0.0, 0) for kind in proxies}
                for kind in turns(rounds):
                    address, pid = proxies[kind]
                    process = psutil.Process(pid)
                    before = cpu_seconds(process)
                    run = measure(address, model, shape, concurrency, connection_per_context=True)
                    seconds, requests = spent[kind]
                    spent[kind] = (seconds + cpu_seconds(process) - before, requests + run.codes["OK"])
                rows.append(cpu_row(workload, spent))
    except (RuntimeError, FileNotFoundError, subprocess.SubprocessError) as exc:  # reported; others count
        console.print(f"[red]bare forward, CPU a request: {exc}[/]")
    return rows
