"""Any v2 server, for real: the gateway in front of Seldon's MLServer (its own venv), serving a
custom model that declares its inputs and one whose `model-settings.json` declares none. Every RPC
a client uses answers through the gateway as MLServer answers directly; what a model declares is
still checked before anything goes upstream (issue 22, part 3)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from tests.procs import running_gateway, running_mlserver

MODELS = ("declared", "undeclared")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GatewayProcess]]:
    workdir = tmp_path_factory.mktemp("mlserver")
    with (
        running_mlserver(workdir) as mlserver,
        running_gateway(["--upstream", mlserver], workdir / "gateway.log") as gateway,
    ):
        yield mlserver, gateway


def _request(model: str, values: np.ndarray, datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype=datatype, shape=[len(values)])
    request.raw_input_contents.append(values.tobytes())
    return request


def _both(servers: tuple[str, GatewayProcess], call: str, request: object) -> list[object]:
    """The same call straight to MLServer and through the gateway: each answer, or its error."""
    mlserver, gateway = servers
    answers: list[object] = []
    for address in (mlserver, gateway.address):
        with grpc.insecure_channel(address) as channel:
            try:
                answers.append(getattr(service_pb2_grpc.GRPCInferenceServiceStub(channel), call)(request, timeout=10))
            except grpc.RpcError as exc:
                answers.append((exc.code(), exc.details()))
    return answers


@pytest.mark.parametrize("model", MODELS)
def test_every_rpc_answers_as_mlserver_does(servers: tuple[str, GatewayProcess], model: str) -> None:
    values = np.array([1.0, 2.5, -3.0], np.float32)
    calls: list[tuple[str, object]] = [
        ("ServerLive", pb.ServerLiveRequest()),
        ("ServerReady", pb.ServerReadyRequest()),
        ("ModelReady", pb.ModelReadyRequest(name=model)),
        ("ModelMetadata", pb.ModelMetadataRequest(name=model)),
        ("ModelInfer", _request(model, values)),
    ]
    for call, request in calls:
        direct, through = _both(servers, call, request)
        assert through == direct, (call, direct, through)
    direct, through = _both(servers, "ModelInfer", _request(model, values))
    assert isinstance(through, pb.ModelInferResponse)
    assert np.frombuffer(through.raw_output_contents[0], np.float32).tolist() == (values * 2).tolist()
    metadata = _both(servers, "ModelMetadata", pb.ModelMetadataRequest(name=model))[1]
    assert isinstance(metadata, pb.ModelMetadataResponse)
    assert [i.name for i in metadata.inputs] == (["INPUT0"] if model == "declared" else [])


@pytest.mark.parametrize("model", MODELS)
def test_streams_answer_as_mlserver_does(servers: tuple[str, GatewayProcess], model: str) -> None:
    """MLServer's ModelStreamInfer answers ModelInferResponses (not Triton's stream message): the
    gateway passes the bytes through untouched."""
    mlserver, gateway = servers
    sent = [_request(model, np.array([float(i), 1.0], np.float32)).SerializeToString() for i in range(3)]
    answers = []
    for address in (mlserver, gateway.address):
        with grpc.insecure_channel(address) as channel:
            stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                           request_serializer=bytes, response_deserializer=bytes)  # fmt: skip
            answers.append(list(stream(iter(sent), timeout=10)))
    direct, through = answers
    assert len(through) == 3 and through == direct
    outputs = [pb.ModelInferResponse.FromString(answer).raw_output_contents[0] for answer in through]
    assert [np.frombuffer(o, np.float32).tolist() for o in outputs] == [[0.0, 2.0], [2.0, 2.0], [4.0, 2.0]]


def test_what_is_declared_is_checked_and_what_is_not_is_answered_by_the_server(
    servers: tuple[str, GatewayProcess],
) -> None:
    ints = np.array([1, 2], np.int32)
    direct, through = _both(servers, "ModelInfer", _request("declared", ints, "INT32"))
    assert through == (grpc.StatusCode.INVALID_ARGUMENT,
                       "model 'declared': input 'INPUT0' has datatype INT32, expected FP32")  # fmt: skip
    direct, through = _both(servers, "ModelInfer", _request("undeclared", ints, "INT32"))
    assert through == direct and isinstance(through, pb.ModelInferResponse)  # MLServer's own answer
    assert np.frombuffer(through.raw_output_contents[0], np.int32).tolist() == [2, 4]
