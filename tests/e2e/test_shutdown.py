"""SIGTERM drains: health flips to NOT_SERVING, new work is refused, in-flight work completes, exit 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.local.processes import GatewayProcess
from gateway.local.samples import infer_inputs
from tests.procs import TritonCli

IN_FLIGHT = 50
DELAY_MS = 2000.0


async def _watch_health(address: str, flipped_at: list[float]) -> None:
    """Poll Check, noting when NOT_SERVING is first seen, until the server refuses new RPCs."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return
            if response.status == health_pb2.HealthCheckResponse.NOT_SERVING and not flipped_at:
                flipped_at.append(time.monotonic())
            await asyncio.sleep(0.01)


async def test_sigterm_with_50_slow_requests_in_flight(triton: TritonCli, tmp_path: Path) -> None:
    args = ["--upstream", triton.address, "--host", "127.0.0.1", "--port", "0", "--drain-delay", "0.5"]
    gateway = GatewayProcess(args, tmp_path / "gateway.log")
    gateway.start()
    flipped_at: list[float] = []
    finished_at: list[float] = []
    inputs = {"DELAY_MS": np.array([[DELAY_MS]], np.float32)}

    async with aioclient.InferenceServerClient(gateway.address) as client:

        async def slow_request() -> float:
            result = await client.infer("slow", infer_inputs(inputs))
            finished_at.append(time.monotonic())
            return float(result.as_numpy("OUTPUT0")[0, 0])

        requests = [asyncio.create_task(slow_request()) for _ in range(IN_FLIGHT)]
        await asyncio.sleep(1.0)  # all 50 are with Triton now; the first batch ends at ~2 s
        watcher = asyncio.create_task(_watch_health(gateway.address, flipped_at))
        await asyncio.sleep(0.05)
        gateway.terminate()
        await watcher  # returns once new RPCs are refused
        async with aioclient.InferenceServerClient(gateway.address) as late_client:
            try:
                await late_client.infer("slow", infer_inputs(inputs), client_timeout=5)
                late_outcome = "accepted"
            except InferenceServerException as exc:
                late_outcome = exc.status() or ""
        outputs = await asyncio.gather(*requests)

    exit_code = await asyncio.to_thread(gateway.stop)
    assert outputs == [DELAY_MS] * IN_FLIGHT
    assert exit_code == 0
    assert flipped_at, "health never reported NOT_SERVING"
    assert flipped_at[0] < min(finished_at), "health flipped only after requests had finished"
    assert late_outcome == "StatusCode.UNAVAILABLE"
