"""Session-wide real Triton and a gateway in front of it (ephemeral ports on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from tests.procs import TritonCli, running_gateway, running_triton
from tests.recording import RecordingTriton


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonCli]:
    with running_triton(tmp_path_factory.mktemp("triton") / "triton.log") as server:
        yield server


@pytest.fixture(scope="session")
def gateway(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with running_gateway(["--upstream", triton.address], log) as server:
        yield server


@pytest.fixture
def recorder() -> Iterator[tuple[RecordingTriton, str]]:
    servicer = RecordingTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)
