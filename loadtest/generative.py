"""The generative rows of `make bench`: what a stream's request pays for going through the gateway.

- stream overhead: one caller's stream to the `generate` model (4 answers, no delay), one request
  after another: the time from writing a request to its first answer, directly to Triton and
  through a gateway, in interleaved blocks; the gateway's added p50 (target: +0.5 ms at most).
"""

from __future__ import annotations

import queue
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
from rich.console import Console
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess

__all__ = ["OVERHEAD_ROW", "first_answer_times", "generative_rows"]

OVERHEAD_ROW = "streams: time to the first answer, one caller's stream, generate (4 answers), sequential"
_END = object()


def _request(tokens: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="generate")
    for name, value in (("N", tokens), ("DELAY_MS", 0)):
        request.inputs.add(name=name, datatype="INT32", shape=[1])
        request.raw_input_contents.append(np.array([value], np.int32).tobytes())
    return request


def first_answer_times(address: str, count: int, tokens: int = 4) -> list[float]:
    """Seconds from writing each request to its first answer, on one stream, one after another."""
    requests: queue.Queue[object] = queue.Queue()
    times = []
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers: Iterator[pb.ModelStreamInferResponse] = stub.ModelStreamInfer(iter(requests.get, _END))
        request = _request(tokens)
        for _ in range(count):
            sent = time.perf_counter()
            requests.put(request)
            first = next(answers)
            times.append(time.perf_counter() - sent)
            if first.error_message:
                raise RuntimeError(f"stream answered an error: {first.error_message}")
            for _ in range(tokens - 1):
                next(answers)
        requests.put(_END)
        for _ in answers:  # the stream's end
            pass
    return times


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def _overhead_row(console: Console, triton: str, workdir: Path, rounds: int) -> dict[str, object]:
    console.print(f"[bold]{OVERHEAD_ROW}[/]: {rounds} rounds")
    args = ["--upstream", triton, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
    sides: dict[str, list[float]] = {"direct": [], "gateway": []}
    with GatewayProcess(args, workdir / "gateway-streams.log").serving() as (address, _pid):
        for where in (triton, address):  # warm both: connections, the model's signature
            first_answer_times(where, 50)
        for _ in range(rounds * 4):
            for side, where in (("direct", triton), ("gateway", address)):
                sides[side] += first_answer_times(where, 150)
    figures: dict[str, object] = {"scenario": OVERHEAD_ROW, "baseline": "direct Triton"}
    for side, times in sides.items():
        figures[f"{side}_first_p50_ms"] = round(_percentile(times, 50), 3)
        figures[f"{side}_first_p99_ms"] = round(_percentile(times, 99), 3)
    added = statistics.median(sides["gateway"]) - statistics.median(sides["direct"])
    figures["added_p50_ms"] = round(added * 1000, 3)
    figures["target"] = "added p50 <= 0.5 ms"
    return figures


def generative_rows(
    console: Console, triton: str, workdir: Path, rounds: int, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    rows = []
    if wanted(OVERHEAD_ROW):
        rows.append(_overhead_row(console, triton, workdir, rounds))
    return rows
