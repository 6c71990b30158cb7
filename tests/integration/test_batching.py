"""Micro-batching through a real gateway to a real Triton.

`batch_echo` has no dynamic batcher of its own: Triton executes each request it receives on its
own, and tells every row how many rows that execution held (BATCH_SIZE). Rows from several callers
in one execution can only come from the gateway merging them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from gateway.local.processes import GatewayProcess
from tests.procs import TritonCli, running_gateway
from tests.traffic import scrape_metrics

ROW_SHAPES = {"FP32": (4,), "INT32": (2,), "BYTES": (3,), "BOOL": (1,), "FP16": (2,), "UINT64": (1,), "INT8": (3,)}


@pytest.fixture(scope="module")
def batching_gateway(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("batching") / "gateway.log"
    args = ["--upstream", triton.address, "--batching", "--max-batch-size", "16", "--metrics-port", "0"]
    with running_gateway(args, log) as server:
        yield server


def _tensors(seed: int, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for datatype, row in ROW_SHAPES.items():
        shape = (rows, *row)
        if datatype == "BYTES":  # different lengths per caller, so rows have different byte sizes
            words = [f"caller{seed}-{i}-{'x' * int(rng.integers(0, 12))}".encode() for i in range(int(np.prod(shape)))]
            arrays[datatype] = np.array(words, dtype=np.object_).reshape(shape)
        elif datatype == "BOOL":
            arrays[datatype] = rng.integers(0, 2, shape).astype(bool)
        else:
            arrays[datatype] = (rng.normal(size=shape) * 50).astype(triton_to_np_dtype(datatype))
    return arrays


def _request(arrays: dict[str, np.ndarray], request_id: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="batch_echo", id=request_id)
    for datatype, array in arrays.items():
        request.inputs.add(name=f"IN_{datatype}", datatype=datatype, shape=list(array.shape))
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        request.raw_input_contents.append(bytes(raw))
    return request


def _outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    decoded = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if tensor.datatype == "BYTES":
            decoded[tensor.name] = deserialize_bytes_tensor(raw).reshape(list(tensor.shape))
        else:
            decoded[tensor.name] = np.frombuffer(raw, triton_to_np_dtype(tensor.datatype)).reshape(list(tensor.shape))
    return decoded


Outcome = tuple[pb.ModelInferResponse | grpc.aio.AioRpcError, dict[str, str]]


async def _call(stub: Any, request: pb.ModelInferRequest, timeout: float) -> Outcome:
    call = stub.ModelInfer(request, timeout=timeout)
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return exc, {}
    return response, {key: str(value) for key, value in await call.trailing_metadata() or ()}


async def _concurrently(address: str, requests: list[tuple[pb.ModelInferRequest, float]]) -> list[Outcome]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await _call(stub, _request(_tensors(0, 1), "warm-up"), 30)  # metadata fetched, connection up
        return await asyncio.gather(*(_call(stub, request, timeout) for request, timeout in requests))


def _check_own_rows(response: pb.ModelInferResponse, arrays: dict[str, np.ndarray], request_id: str) -> int:
    """Each output holds exactly this caller's rows; the BATCH_SIZE its execution reported."""
    assert response.id == request_id
    outputs = _outputs(response)
    for datatype, array in arrays.items():
        np.testing.assert_array_equal(outputs[f"OUT_{datatype}"], array)
    sizes = set(outputs["BATCH_SIZE"].ravel().tolist())
    assert len(sizes) == 1
    return int(sizes.pop())


def test_concurrent_callers_of_every_datatype_share_executions_and_get_their_own_rows(
    batching_gateway: GatewayProcess,
) -> None:
    callers = [(_tensors(seed, 1 + seed % 3), f"req-{seed}") for seed in range(24)]
    outcomes = asyncio.run(_concurrently(batching_gateway.address, [(_request(a, i), 30) for a, i in callers]))
    executed = []
    for (arrays, request_id), (response, trailing) in zip(callers, outcomes, strict=True):
        assert isinstance(response, pb.ModelInferResponse), response
        executed.append(_check_own_rows(response, arrays, request_id))
        assert int(trailing["x-batch-size"]) >= 1
    assert max(executed) > 3, f"no execution held rows of several callers: {executed}"
    assert max(executed) <= 16  # --max-batch-size
    metrics = scrape_metrics(batching_gateway.metrics_address)
    assert metrics[("gateway_batch_merged_calls_total", frozenset())] >= 1
    assert metrics[("gateway_batch_requests_total", frozenset())] >= 25
    # every caller of a merged call has the call's time in its own upstream latency
    upstream = frozenset({("pool", "default"), ("model", "batch_echo"), ("variant", "1")})
    assert (
        metrics[("gateway_upstream_duration_seconds_count", upstream)]
        == metrics[("gateway_batch_requests_total", frozenset())]
    )


def test_one_callers_bad_input_fails_only_that_caller(batching_gateway: GatewayProcess) -> None:
    good = [(_tensors(seed, 1), f"ok-{seed}") for seed in range(12)]
    bad = _request(_tensors(99, 1), "bad")
    bad.inputs[1].shape[1] = 3  # IN_INT32 is [2] per row
    requests = [(_request(arrays, request_id), 30.0) for arrays, request_id in good]
    requests.insert(6, (bad, 30.0))
    outcomes = asyncio.run(_concurrently(batching_gateway.address, requests))
    failed = outcomes[6][0]
    assert isinstance(failed, grpc.aio.AioRpcError)
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT and "IN_INT32" in (failed.details() or "")
    for (arrays, request_id), (response, _) in zip(good, outcomes[:6] + outcomes[7:], strict=True):
        assert isinstance(response, pb.ModelInferResponse), response
        _check_own_rows(response, arrays, request_id)


def test_a_hurried_caller_times_out_alone(batching_gateway: GatewayProcess) -> None:
    """Its deadline passes while it waits behind the call in flight (each execution sleeps 10 ms):
    it gets DEADLINE_EXCEEDED; the callers it would have been merged with are not cut short."""
    patient = [(_tensors(seed, 1), f"p-{seed}") for seed in range(8)]
    requests = [(_request(a, i), 30.0) for a, i in patient]
    requests.insert(1, (_request(_tensors(50, 1), "hurried"), 0.002))
    outcomes = asyncio.run(_concurrently(batching_gateway.address, requests))
    hurried = outcomes.pop(1)[0]
    assert isinstance(hurried, grpc.aio.AioRpcError) and hurried.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for (arrays, request_id), (response, _) in zip(patient, outcomes, strict=True):
        assert isinstance(response, pb.ModelInferResponse), response
        _check_own_rows(response, arrays, request_id)


def test_without_batching_each_request_executes_alone(gateway: GatewayProcess) -> None:
    """The control: the same traffic through a gateway without --batching never shares an execution."""
    callers = [(_tensors(seed, 2), f"solo-{seed}") for seed in range(8)]
    outcomes = asyncio.run(_concurrently(gateway.address, [(_request(a, i), 30) for a, i in callers]))
    for (arrays, request_id), (response, trailing) in zip(callers, outcomes, strict=True):
        assert isinstance(response, pb.ModelInferResponse), response
        assert _check_own_rows(response, arrays, request_id) == 2
        assert "x-batch-size" not in trailing


def test_typed_contents_and_requests_that_differ_are_not_merged_but_served(batching_gateway: GatewayProcess) -> None:
    """Callers asking for different outputs cannot share a call; each still gets its answer."""
    callers = [(_tensors(seed, 1), f"o-{seed}") for seed in range(6)]
    requests = []
    for index, (arrays, request_id) in enumerate(callers):
        request = _request(arrays, request_id)
        request.outputs.add(name="BATCH_SIZE")
        if index % 2:
            request.outputs.add(name="OUT_FP32")
        requests.append((request, 30.0))
    outcomes = asyncio.run(_concurrently(batching_gateway.address, requests))
    for index, (response, _) in enumerate(outcomes):
        assert isinstance(response, pb.ModelInferResponse), response
        names = sorted(output.name for output in response.outputs)
        assert names == (["BATCH_SIZE", "OUT_FP32"] if index % 2 else ["BATCH_SIZE"])
