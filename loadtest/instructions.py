"""Instructions a request, the bare forward's repeatable cost: the gateway and nginx `grpc_pass`,
each run under valgrind's callgrind in front of the same Triton, counting the user-space
instructions their process executes while a fixed number of `identity` requests go through
(instrumentation off while they start, so a gateway is up in under a minute). Unlike CPU time,
the count is the same from run to run whatever else the machine does; it leaves out the kernel
(system calls, the loopback network, scheduling), which `gateway CPU µs/req` in the perf_analyzer
rows includes."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.local.processes import GatewayProcess
from loadtest import BENCH_THREADS
from loadtest.nginx import running_nginx

__all__ = ["callgrind_command", "count_instructions", "instruction_rows"]

VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"
CALLGRIND_CONTROL = shutil.which("callgrind_control") or "/usr/bin/callgrind_control"
REQUESTS = 1000
CONCURRENCIES = (1, 16)


def callgrind_command(folder: Path) -> list[str]:
    return [VALGRIND, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/callgrind.out.%p",
            f"--log-file={folder}/valgrind.%p.log"]  # fmt: skip


def _control(pid: int, *flags: str) -> None:
    subprocess.run([CALLGRIND_CONTROL, *flags, str(pid)], check=True, capture_output=True, timeout=120)


def _identity() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    request.raw_input_contents.append(np.ones(16, np.float32).tobytes())
    return request


def _totals(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def count_instructions(target: str, pid: int, folder: Path, requests: int, concurrency: int) -> float:
    """Instructions per request of process `pid` (running under callgrind, instrumentation off):
    each client thread opens its channel and warms up, then instrumentation goes on, the
    counters are zeroed, `requests` are sent (`concurrency` in flight) and the counters dumped."""
    request = _identity()
    left = [requests]
    lock = threading.Lock()
    failures: list[str] = []
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()

    def client() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(3):
                stub.ModelInfer(request, timeout=600)
            ready.wait()
            go.wait()
            while True:
                with lock:
                    if left[0] <= 0:
                        break
                    left[0] -= 1
                try:
                    stub.ModelInfer(request, timeout=600)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")
            ready.wait()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=600)
    _control(pid, "--instr=on")
    _control(pid, "--zero")
    before = set(folder.glob(f"callgrind.out.{pid}*"))
    go.set()
    ready.wait(timeout=600)
    _control(pid, "--dump")
    for thread in threads:
        thread.join(60)
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed under callgrind, first: {failures[0]}")
    deadline = time.monotonic() + 60
    while not (dumps := set(folder.glob(f"callgrind.out.{pid}*")) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for process {pid}")
    return _totals(max(dumps, key=lambda path: path.stat().st_mtime)) / requests


@dataclass(frozen=True, slots=True)
class Proxy:
    name: str
    start: Callable[[str, Path], contextlib.AbstractContextManager[tuple[str, int]]]


@contextlib.contextmanager
def _gateway(triton: str, folder: Path) -> Iterator[tuple[str, int]]:
    args = ["--upstream", triton, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING", *BENCH_THREADS]
    with GatewayProcess(args, folder / "gateway-callgrind.log", wrapper=callgrind_command(folder)).serving() as served:
        yield served


@contextlib.contextmanager
def _nginx(triton: str, folder: Path) -> Iterator[tuple[str, int]]:
    with running_nginx(triton, wrapper=callgrind_command(folder)) as (address, process):
        yield address, process.pid


PROXIES = (Proxy("gateway", _gateway), Proxy("nginx grpc_pass", _nginx))


def instruction_rows(
    console: Console, triton: str, workdir: Path, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    """One row per concurrency: the gateway's and nginx's instructions a request, side by side."""
    names = {c: f"bare forward, instructions a request (callgrind): identity c={c}" for c in CONCURRENCIES}
    selected = [c for c in CONCURRENCIES if wanted(names[c])]
    if not selected:
        return []
    if not Path(VALGRIND).exists():
        console.print(f"[yellow]instruction rows skipped: {VALGRIND} is missing (make bench installs it)[/]")
        return []
    counts: dict[str, dict[int, float]] = {}
    for proxy in PROXIES:
        folder = workdir / f"callgrind-{proxy.name.split()[0]}"
        folder.mkdir(exist_ok=True)
        console.print(f"[bold]instructions a request[/]: {proxy.name} under callgrind, {REQUESTS} requests per row")
        try:
            with proxy.start(triton, folder) as (address, pid):
                counts[proxy.name] = {c: count_instructions(address, pid, folder, REQUESTS, c) for c in selected}
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # reported; others count
            console.print(f"[red]instructions a request, {proxy.name}: {exc}[/]")
            return []
    rows: list[dict[str, object]] = []
    for c in selected:
        gateway, nginx = counts["gateway"][c], counts["nginx grpc_pass"][c]
        rows.append({"scenario": names[c], "baseline": "nginx grpc_pass", "gateway_instructions_per_request":
                     round(gateway), "nginx_instructions_per_request": round(nginx),
                     "instructions_ratio": round(gateway / nginx, 3)})  # fmt: skip
    return rows
