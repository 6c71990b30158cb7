"""The caller's remaining deadline travels upstream as the upstream call's own deadline.

Triton exposes no API that reports the deadline a request arrived with, so this one test puts a
recording stand-in of the Triton service behind the gateway (a real gRPC server on 127.0.0.1)
that notes `time_remaining()` for each ModelInfer it receives.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.samples import infer_inputs
from tests.procs import running_gateway


class RecordingTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.remaining: list[float | None] = []

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata(name="INPUT0", datatype="FP32", shape=[-1])
        return pb.ModelMetadataResponse(name=request.name, versions=["1"], inputs=[tensor])

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        model = pb.RepositoryIndexResponse.ModelIndex(name="m", version="1", state="READY")
        return pb.RepositoryIndexResponse(models=[model])

    def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.ServicerContext) -> pb.ModelConfigResponse:
        response = pb.ModelConfigResponse()
        response.config.name = request.name
        return response

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        self.remaining.append(context.time_remaining())
        return pb.ModelInferResponse(model_name=request.model_name, model_version="1")


@pytest.fixture
def recorder() -> Iterator[tuple[RecordingTriton, str]]:
    servicer = RecordingTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_remaining_deadline_reaches_upstream(recorder: tuple[RecordingTriton, str], tmp_path: Path) -> None:
    servicer, address = recorder
    inputs = infer_inputs({"INPUT0": np.zeros(2, np.float32)})
    with (
        running_gateway(["--upstream", address], tmp_path / "gateway.log") as gateway,
        grpcclient.InferenceServerClient(gateway.address) as client,
    ):
        client.infer("m", inputs, client_timeout=7.0)
        client.infer("m", inputs)
    with_deadline, without_deadline = servicer.remaining
    assert with_deadline is not None and 5.0 < with_deadline <= 7.5  # grpc-timeout is coarse-grained
    assert without_deadline is None or without_deadline > 3600
