"""`gateway serve --workers N`: the core serves the port on N threads (default: one per CPU
core; one worker runs the current-thread scheduler on a thread of its own); requests over many
connections are all served and counted once."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.procs import TritonCli, running_gateway
from tests.traffic import scrape_metrics

CONNECTIONS = 16


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    return request


def _send_over_new_connections(address: str, per_connection: int) -> int:
    """Each connection its own (no shared subchannel); the answers received."""
    answered = 0
    for _ in range(CONNECTIONS):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(per_connection):
                stub.ModelInfer(_identity(), timeout=10)
                answered += 1
    return answered


@pytest.mark.parametrize("workers", [1, 3, None])
def test_the_core_runs_the_threads_asked_for_and_serves_every_connection(
    triton: TritonCli, tmp_path: Path, workers: int | None
) -> None:
    args = ["--upstream", triton.address, "--metrics-port", "0"]
    args += ["--workers", str(workers)] if workers else []
    with running_gateway(args, tmp_path / "gateway.log") as gateway:
        assert _send_over_new_connections(gateway.address, per_connection=5) == CONNECTIONS * 5
        metrics = scrape_metrics(gateway.metrics_address)
    assert metrics[("gateway_core_threads", frozenset())] == (workers or os.cpu_count())
    served = {dict(labels)["code"]: value for (name, labels), value in metrics.items()
              if name == "gateway_requests_total" and dict(labels).get("model") == "identity"}  # fmt: skip
    assert served == {"OK": CONNECTIONS * 5}
    assert metrics[("gateway_connections_accepted_total", frozenset())] >= CONNECTIONS
