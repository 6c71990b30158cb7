"""Each failure reaches the caller with a precise status code and an actionable message."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.samples import infer_inputs
from tests.procs import TritonCli, health_status, running_gateway


def _infer(address: str, model: str, inputs: dict[str, np.ndarray], **kwargs: object) -> grpcclient.InferResult:
    with grpcclient.InferenceServerClient(address) as client:
        return client.infer(model, infer_inputs(inputs), **kwargs)


def _failure(address: str, model: str, inputs: dict[str, np.ndarray], **kwargs: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        _infer(address, model, inputs, **kwargs)
    return caught.value


def _raw_infer(address: str, request: pb.ModelInferRequest) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return caught.value


def _count(address: str) -> int:
    return int(_infer(address, "counter", {"INPUT0": np.zeros(1, np.float32)}).as_numpy("COUNT")[0])


def test_unknown_model_is_not_found(gateway: GatewayProcess) -> None:
    error = _failure(gateway.address, "no_such_model", {"INPUT0": np.zeros(2, np.float32)})
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "no_such_model" in (error.message() or "")


def test_unknown_version_is_not_found(gateway: GatewayProcess) -> None:
    error = _failure(gateway.address, "identity", {"INPUT0": np.zeros(2, np.float32)}, model_version="7")
    assert error.status() == "StatusCode.NOT_FOUND"


BAD_INPUTS: dict[str, tuple[dict[str, np.ndarray], str]] = {
    "wrong-name": ({"WRONG": np.zeros(2, np.float32)}, "unknown input 'WRONG'"),
    "wrong-datatype": ({"INPUT0": np.zeros(2, np.int32)}, "datatype INT32, expected FP32"),
    "wrong-rank": ({"INPUT0": np.zeros((2, 2), np.float32)}, "has shape [2, 2], expected [-1]"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_mismatched_inputs_are_rejected_before_triton(case: str, triton: TritonCli, gateway: GatewayProcess) -> None:
    """INVALID_ARGUMENT names the problem, and the model never executes (its counter holds still)."""
    inputs, expected = BAD_INPUTS[case]
    before = _count(triton.address)
    error = _failure(gateway.address, "counter", inputs)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert expected in (error.message() or "")
    assert _count(triton.address) == before + 1


def _request(model: str, name: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (_request("counter", "INPUT0", "FP32", [4], b"\0" * 12), "has 12 bytes, expected 16"),
        (_request("text", "INPUT0", "BYTES", [2], b"\x03\0\0\0abc"), "holds 1 strings, expected 2"),
        (_request("classifier", "INPUT0", "FP32", [40, 64], b"\0" * 40 * 256), "exceeds max_batch_size 32"),
        (_request("add_sub", "INPUT0", "INT32", [1], b"\0" * 4), "missing required input(s) ['INPUT1']"),
    ],
    ids=["byte-size", "bytes-count", "batch-size", "missing-input"],
)
def test_raw_requests_with_bad_sizes_are_invalid(
    request_: pb.ModelInferRequest, expected: str, gateway: GatewayProcess
) -> None:
    error = _raw_infer(gateway.address, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in str(error.details())


def test_unknown_requested_output_is_invalid(gateway: GatewayProcess) -> None:
    request = _request("identity", "INPUT0", "FP32", [1], b"\0" * 4)
    request.outputs.add(name="NOPE")
    error = _raw_infer(gateway.address, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown output 'NOPE'" in str(error.details())


def test_model_error_keeps_tritons_code_and_message(triton: TritonCli, gateway: GatewayProcess) -> None:
    inputs = {"INPUT0": np.zeros(2, np.float32), "FAIL": np.array([True])}
    direct, via_gateway = (_failure(address, "flaky", inputs) for address in (triton.address, gateway.address))
    assert (via_gateway.status(), via_gateway.message()) == (direct.status(), direct.message())


def test_deadline_is_honoured_end_to_end(gateway: GatewayProcess) -> None:
    started = time.monotonic()
    error = _failure(gateway.address, "slow", {"DELAY_MS": np.array([[3000]], np.float32)}, client_timeout=0.3)
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 2.5


@pytest.fixture
def small_limit_gateway(triton: TritonCli, tmp_path: Path) -> Iterator[GatewayProcess]:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nmax_message_bytes: 100000\npools:\n  main:\n    endpoints: [{triton.address}]\n"
        "default_pool: main\n"
    )
    with running_gateway(["--config", str(config)], tmp_path / "gateway.log") as server:
        yield server


def test_message_over_the_limit_is_resource_exhausted(small_limit_gateway: GatewayProcess) -> None:
    error = _failure(small_limit_gateway.address, "image", {"INPUT0": np.zeros((1, 3, 224, 224), np.float32)})
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    small = _infer(small_limit_gateway.address, "identity", {"INPUT0": np.ones(8, np.float32)})
    assert small.as_numpy("OUTPUT0").sum() == 8


def test_upstream_down_is_unavailable_naming_the_pool(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with running_gateway(["--upstream", dead], tmp_path / "gateway.log") as server:
        assert health_status(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        error = _failure(server.address, "identity", {"INPUT0": np.zeros(2, np.float32)})
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert "upstream pool 'default'" in (error.message() or "") and dead in (error.message() or "")
        with grpcclient.InferenceServerClient(server.address) as client:
            assert client.is_server_live() and not client.is_server_ready()
