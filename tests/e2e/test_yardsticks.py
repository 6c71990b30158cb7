"""The benchmark's yardsticks answer real requests: the naive passthrough forwards to Triton
unchanged (its figures are only meaningful if it does the same work as the gateway), and the
canned server answers every ModelInfer; and callgrind's count of a proxy's instructions a request,
the bench's repeatable cost figure, comes out the same twice."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from loadtest.instructions import callgrind_command, count_instructions
from loadtest.nginx import running_nginx
from loadtest.reference_server import running
from tests.procs import TritonCli


def _infer(address: str, values: np.ndarray, timeout: float = 10) -> service_pb2.ModelInferResponse:
    request = service_pb2.ModelInferRequest(model_name="identity", id="r1")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.tobytes())
    with grpc.insecure_channel(address) as channel:
        response: service_pb2.ModelInferResponse = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=timeout
        )
    return response


def test_the_naive_passthrough_forwards_to_triton(triton: TritonCli) -> None:
    values = np.arange(16, dtype=np.float32)
    with running("loadtest.passthrough", "--upstream", triton.address) as (passthrough, process):
        assert _infer(passthrough, values) == _infer(triton.address, values)
    assert process.returncode == 0


def test_the_canned_server_answers_model_infer() -> None:
    with running("loadtest.canned") as (canned, process):
        response = _infer(canned, np.ones(16, dtype=np.float32))
    assert process.returncode == 0
    assert response.model_name == "identity" and len(response.raw_output_contents[0]) == 64


def test_callgrind_counts_a_proxys_instructions_a_request_the_same_twice(triton: TritonCli, tmp_path: Path) -> None:
    with running_nginx(triton.address, wrapper=callgrind_command(tmp_path)) as (address, process):
        first = count_instructions(address, process.pid, tmp_path, requests=40, concurrency=1)
        second = count_instructions(address, process.pid, tmp_path, requests=40, concurrency=2)
    assert 5_000 < first < 1_000_000, first  # nginx forwards a small gRPC call in about 40,000
    assert abs(second - first) / first < 0.1, (first, second)
