"""A recording stand-in for Triton's gRPC service, for the two facts Triton cannot report: the
deadline and the trace context a request arrived with. A real gRPC server on 127.0.0.1."""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc


class RecordingTriton(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.remaining: list[float | None] = []
        self.traceparents: list[str | None] = []

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
        traceparent = dict(context.invocation_metadata()).get("traceparent")
        self.traceparents.append(None if traceparent is None else str(traceparent))
        return pb.ModelInferResponse(model_name=request.model_name, model_version="1")
