"""The benchmark's yardsticks answer real requests: the naive passthrough forwards to Triton
unchanged (its figures are only meaningful if it does the same work as the gateway), and the
canned server answers every ModelInfer."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.procs import TritonCli


@contextlib.contextmanager
def _serving(module: str, *args: str) -> Iterator[str]:
    with subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert " serving on " in line, line
            yield line.split()[-1]
        finally:
            process.terminate()
            assert process.wait(10) == 0


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
    with _serving("loadtest.passthrough", "--upstream", triton.address) as passthrough:
        assert _infer(passthrough, values) == _infer(triton.address, values)


def test_the_canned_server_answers_model_infer() -> None:
    with _serving("loadtest.canned") as canned:
        response = _infer(canned, np.ones(16, dtype=np.float32))
    assert response.model_name == "identity" and len(response.raw_output_contents[0]) == 64
