"""Every model answers the same through the gateway as directly from Triton."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.local.processes import GatewayProcess
from gateway.local.samples import Sample, infer_inputs, samples
from tests.procs import TritonCli

DETERMINISTIC = [s for s in samples() if s.deterministic]


def _id(sample: Sample) -> str:
    return f"{sample.model}-v{sample.version}" if sample.version else sample.model


def _outputs(sample: Sample) -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(name) for name in sample.outputs]


@pytest.mark.parametrize("sample", DETERMINISTIC, ids=_id)
def test_sync_client_gets_the_direct_response(sample: Sample, triton: TritonCli, gateway: GatewayProcess) -> None:
    """The whole ModelInferResponse message via the gateway equals Triton's own, byte for byte."""
    answers = []
    for address in (triton.address, gateway.address):
        with grpcclient.InferenceServerClient(address) as client:
            result = client.infer(
                sample.model, infer_inputs(sample.inputs), model_version=sample.version, outputs=_outputs(sample)
            )
            answers.append(result.get_response())
    direct, via_gateway = answers
    assert via_gateway == direct
    assert len(via_gateway.raw_output_contents) == len(sample.outputs)


@pytest.mark.parametrize("sample", DETERMINISTIC, ids=_id)
async def test_aio_client_gets_the_direct_response(sample: Sample, triton: TritonCli, gateway: GatewayProcess) -> None:
    answers = []
    for address in (triton.address, gateway.address):
        async with aioclient.InferenceServerClient(address) as client:
            result = await client.infer(sample.model, infer_inputs(sample.inputs), model_version=sample.version)
            answers.append({name: result.as_numpy(name) for name in sample.outputs})
    direct, via_gateway = answers
    for name in sample.outputs:
        np.testing.assert_array_equal(via_gateway[name], direct[name])


def test_text_model_round_trips_utf8_bytes(gateway: GatewayProcess) -> None:
    strings = np.array(["héllo".encode(), b"", b"\x00binary\xff"], dtype=np.object_)
    with grpcclient.InferenceServerClient(gateway.address) as client:
        result = client.infer("text", infer_inputs({"INPUT0": strings}))
    assert result.as_numpy("OUTPUT0").tolist() == ["HÉLLO".encode(), b"", b"\x00BINARY\xef\xbf\xbd"]


def test_counter_requests_reach_triton_every_time(gateway: GatewayProcess) -> None:
    """With no cache, each request through the gateway executes the model once."""
    inputs = {"INPUT0": np.ones(4, dtype=np.float32)}
    with grpcclient.InferenceServerClient(gateway.address) as client:
        counts = [int(client.infer("counter", infer_inputs(inputs)).as_numpy("COUNT")[0]) for _ in range(3)]
    assert counts[1] == counts[0] + 1 and counts[2] == counts[0] + 2


def test_typed_contents_are_accepted_like_raw(triton: TritonCli, gateway: GatewayProcess) -> None:
    """A request that carries its tensor in InferTensorContents (not raw bytes) works the same."""
    request = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, values in (("INPUT0", [1, 2, 3]), ("INPUT1", [10, 20, 30])):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[3])
        tensor.contents.int_contents.extend(values)
    answers = []
    for address in (triton.address, gateway.address):
        with grpc.insecure_channel(address) as channel:
            answers.append(service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10))
    assert answers[1] == answers[0]
    assert np.frombuffer(answers[1].raw_output_contents[0], np.int32).tolist() == [11, 22, 33]
