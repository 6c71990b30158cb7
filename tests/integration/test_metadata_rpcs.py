"""Every metadata RPC answers through the gateway as Triton answers directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from tests.procs import TritonCli, health_status

Call = Callable[[service_pb2_grpc.GRPCInferenceServiceStub], Any]

CALLS: dict[str, Call] = {
    "ServerLive": lambda s: s.ServerLive(pb.ServerLiveRequest()),
    "ServerReady": lambda s: s.ServerReady(pb.ServerReadyRequest()),
    "ServerMetadata": lambda s: s.ServerMetadata(pb.ServerMetadataRequest()),
    "ModelReady": lambda s: s.ModelReady(pb.ModelReadyRequest(name="classifier", version="2")),
    "ModelReady-unknown": lambda s: s.ModelReady(pb.ModelReadyRequest(name="add_sub", version="9")),
    "ModelMetadata": lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="add_sub")),
    "ModelMetadata-version": lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="classifier", version="1")),
    "ModelConfig": lambda s: s.ModelConfig(pb.ModelConfigRequest(name="stream")),
    "ModelStatistics": lambda s: s.ModelStatistics(pb.ModelStatisticsRequest(name="text")),
    "ModelStatistics-all": lambda s: s.ModelStatistics(pb.ModelStatisticsRequest()),
    "RepositoryIndex": lambda s: s.RepositoryIndex(pb.RepositoryIndexRequest()),
    "RepositoryIndex-ready": lambda s: s.RepositoryIndex(pb.RepositoryIndexRequest(ready=True)),
    "TraceSetting": lambda s: s.TraceSetting(pb.TraceSettingRequest()),
    "TraceSetting-model": lambda s: s.TraceSetting(pb.TraceSettingRequest(model_name="identity")),
    "LogSettings": lambda s: s.LogSettings(pb.LogSettingsRequest()),
}


def _call(address: str, call: Call) -> Any:
    with grpc.insecure_channel(address) as channel:
        return call(service_pb2_grpc.GRPCInferenceServiceStub(channel))


@pytest.mark.parametrize("name", list(CALLS))
def test_metadata_rpc_equals_direct(name: str, triton: TritonCli, gateway: GatewayProcess) -> None:
    direct = _call(triton.address, CALLS[name])
    assert _call(gateway.address, CALLS[name]) == direct


def test_unknown_model_metadata_is_not_found(gateway: GatewayProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _call(gateway.address, lambda s: s.ModelMetadata(pb.ModelMetadataRequest(name="nope")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_repository_load_and_unload_reach_the_pool(gateway: GatewayProcess) -> None:
    """Triton runs without explicit model control here, so it refuses; the refusal comes through intact."""
    for call in (
        lambda s: s.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="identity")),
        lambda s: s.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="identity")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _call(gateway.address, call)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "explicit model load / unload is not allowed" in str(caught.value.details())


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest()),
        lambda s: s.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(name="r", key="/k", byte_size=8)),
        lambda s: s.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest()),
        lambda s: s.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest(name="r")),
    ],
)
def test_shared_memory_rpcs_are_unimplemented_with_a_reason(call: Call, gateway: GatewayProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _call(gateway.address, call)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "raw_input_contents" in str(caught.value.details())


def test_health_serving_for_the_inference_service(gateway: GatewayProcess) -> None:
    assert health_status(gateway.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(gateway.address, "inference.GRPCInferenceService") == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(gateway: GatewayProcess) -> None:
    with grpc.insecure_channel(gateway.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))
    names = {service.name for service in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
