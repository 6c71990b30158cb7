"""ModelStreamInfer through the gateway is a faithful bidirectional passthrough."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from gateway.local.processes import GatewayProcess
from gateway.local.samples import infer_inputs
from tests.procs import TritonCli

Outcome = tuple[str, object]
StreamRequest = tuple[str, dict[str, np.ndarray], str]


def _stream(address: str, requests: list[StreamRequest]) -> list[Outcome]:
    """Send each (model, inputs, request id) on one stream; what came back, in order."""
    received: queue.Queue[Outcome] = queue.Queue()

    def on_response(result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
        if error is not None:
            received.put(("error", error.message()))
        else:
            assert result is not None
            response = result.get_response()
            received.put((response.id, {o.name: result.as_numpy(o.name).tolist() for o in response.outputs}))

    with grpcclient.InferenceServerClient(address) as client:
        client.start_stream(callback=on_response)
        for model, inputs, request_id in requests:
            client.async_stream_infer(model, infer_inputs(inputs), request_id=request_id)
        client.stop_stream()
    return [received.get_nowait() for _ in range(received.qsize())]


def test_decoupled_model_yields_the_same_responses(triton: TritonCli, gateway: GatewayProcess) -> None:
    requests: list[StreamRequest] = [("stream", {"N": np.array([4], dtype=np.int32)}, "first")]
    direct = _stream(triton.address, requests)
    assert len(direct) == 4
    assert _stream(gateway.address, requests) == direct


def test_several_models_share_one_stream(triton: TritonCli, gateway: GatewayProcess) -> None:
    requests: list[StreamRequest] = [
        ("stream", {"N": np.array([2], dtype=np.int32)}, "a"),
        ("identity", {"INPUT0": np.arange(3, dtype=np.float32)}, "b"),
        ("stream", {"N": np.array([3], dtype=np.int32)}, "c"),
    ]
    via_gateway = _stream(gateway.address, requests)
    # Directly, one stream per model: Triton 2.51 aborts when two models' responses race on one stream.
    direct = [outcome for request in requests for outcome in _stream(triton.address, [request])]
    assert sorted(map(repr, via_gateway)) == sorted(map(repr, direct))
    assert [rid for rid, _ in via_gateway].count("c") == 3


def test_invalid_request_gets_an_error_in_stream_and_the_stream_goes_on(gateway: GatewayProcess) -> None:
    requests: list[StreamRequest] = [
        ("identity", {"INPUT0": np.arange(3, dtype=np.int32)}, "bad-dtype"),
        ("no_such_model", {"INPUT0": np.arange(3, dtype=np.float32)}, "unknown"),
        ("stream", {"N": np.array([2], dtype=np.int32)}, "good"),
    ]
    outcomes = _stream(gateway.address, requests)
    errors = [detail for kind, detail in outcomes if kind == "error"]
    assert len(errors) == 2
    assert any("datatype INT32, expected FP32" in str(e) for e in errors)
    assert any("no_such_model" in str(e) for e in errors)
    assert [rid for rid, _ in outcomes].count("good") == 2


async def test_aio_stream_infer(triton: TritonCli, gateway: GatewayProcess) -> None:
    async def collect(address: str) -> list[int]:
        async def requests() -> AsyncIterator[dict[str, object]]:
            yield {"model_name": "stream", "inputs": infer_inputs({"N": np.array([5], dtype=np.int32)})}

        values = []
        async with aioclient.InferenceServerClient(address) as client:
            async for result, error in client.stream_infer(requests()):
                assert error is None
                values.append(int(result.as_numpy("OUTPUT0")[0]))
                if len(values) == 5:
                    break
        return values

    assert await collect(gateway.address) == await collect(triton.address) == [0, 1, 2, 3, 4]
