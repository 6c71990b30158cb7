"""Paths of the core the rest of the suite does not cover, through a real gateway process: a
route swap seen on an open channel, v2 servers that are not Triton, malformed bytes, outlier
detection reading trailers, connection age, variants readdressed in metadata RPCs, an oversized
streamed message, a static address list as `:authority`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway_admin import admin_pb2, admin_pb2_grpc
from tests.procs import TritonCli, running_gateway
from tests.traffic import scrape_metrics

TOKEN = "core-test-token"


class OnlyMetadataServer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """A v2 server that is not Triton: no ModelConfig, no repository index, unversioned models."""

    def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        if request.name != "doubler":
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.name}")
        tensor = pb.ModelMetadataResponse.TensorMetadata(name="x", datatype="FP32", shape=[-1])
        out = pb.ModelMetadataResponse.TensorMetadata(name="y", datatype="FP32", shape=[-1])
        return pb.ModelMetadataResponse(name="doubler", platform="custom", inputs=[tensor], outputs=[out])

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        values = np.frombuffer(request.raw_input_contents[0], dtype=np.float32) * 2
        output = pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[len(values)])
        return pb.ModelInferResponse(
            model_name=request.model_name, outputs=[output], raw_output_contents=[values.tobytes()]
        )


@pytest.fixture
def only_metadata() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(OnlyMetadataServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def _input(values: np.ndarray, name: str = "INPUT0") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


def test_a_v2_server_without_model_config_or_index_is_served(only_metadata: str, tmp_path: Path) -> None:
    with running_gateway(["--upstream", only_metadata], tmp_path / "gateway.log") as gateway:
        client = grpcclient.InferenceServerClient(gateway.address)
        result = client.infer("doubler", [_input(np.array([1.0, 2.5], dtype=np.float32), "x")])
        assert result.as_numpy("y").tolist() == [2.0, 5.0]
        with pytest.raises(grpcclient.InferenceServerException) as error:  # validated from ModelMetadata alone
            client.infer("doubler", [_input(np.array([1.0], dtype=np.float32), "z")])
        assert "unknown input 'z'" in str(error.value)


def test_a_route_swap_is_seen_by_the_next_request_on_an_open_channel(triton: TritonCli, tmp_path: Path) -> None:
    args = ["--upstream", triton.address, "--admin-port", "0", "--admin-token", TOKEN]
    with (
        running_gateway(args, tmp_path / "gateway.log") as gateway,
        grpc.insecure_channel(gateway.address) as channel,
        grpc.insecure_channel(gateway.admin_address) as admin_channel,
    ):
        infer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        request = pb.ModelInferRequest(model_name="classifier")
        tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
        request.raw_input_contents.append(np.zeros((1, 64), dtype=np.float32).tobytes())
        assert tensor.name == "INPUT0"

        def variant() -> str:
            _, call = infer.with_call(request, timeout=10)
            return dict(call.trailing_metadata())["x-gateway-variant"]

        assert variant() == "2"  # zero-config: the latest version
        admin = admin_pb2_grpc.GatewayAdminStub(admin_channel)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        admin.Promote(admin_pb2.PromoteRequest(model="classifier", variant="1"), metadata=auth, timeout=10)
        assert {variant() for _ in range(20)} == {"1"}
        admin.Rollback(admin_pb2.RollbackRequest(model="classifier"), metadata=auth, timeout=10)
        assert {variant() for _ in range(20)} == {"2"}


def test_malformed_bytes_are_invalid_argument(triton: TritonCli, tmp_path: Path) -> None:
    with (
        running_gateway(["--upstream", triton.address], tmp_path / "gateway.log") as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", None, None)
        for payload in (b"\x0a\xff\x01abc", b"\x3a\x05ab", b"\x0f"):
            with pytest.raises(grpc.RpcError) as error:
                raw(payload, timeout=10)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, payload
            assert "malformed ModelInferRequest" in str(error.value.details())
        # ... and the gateway still serves.
        client = grpcclient.InferenceServerClient(gateway.address)
        assert client.infer("identity", [_input(np.ones(4, dtype=np.float32))]).as_numpy("OUTPUT0").tolist() == [1] * 4


def test_a_static_address_list_as_authority_is_served(triton: TritonCli, tmp_path: Path) -> None:
    """gRPC's `ipv4:a,b` target sends the whole list as `:authority`: served, as Triton serves it."""
    with running_gateway(["--upstream", triton.address], tmp_path / "gateway.log") as gateway:
        host, port = gateway.address.rsplit(":", 1)
        with grpc.insecure_channel(f"ipv4:{host}:{port},{host}:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready


class UnavailableServer(OnlyMetadataServer):
    """Connected and ready, but every inference fails UNAVAILABLE (a gateway failure, in trailers)."""

    def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
        context.abort(grpc.StatusCode.UNAVAILABLE, "overloaded")


def _serve(servicer: service_pb2_grpc.GRPCInferenceServiceServicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def test_outlier_detection_counts_the_status_in_the_trailers(tmp_path: Path) -> None:
    """UNAVAILABLE from a connected server (trailers-only here) ejects the endpoint after the
    configured streak, although no connection ever failed."""
    bad, bad_address = _serve(UnavailableServer())
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\ndefault_pool: p\nadmin: {{listen: '127.0.0.1:0', token: {TOKEN}}}\n"
        f"pools:\n  p:\n    endpoints: [{bad_address}]\n    max_attempts: 1\n"
        "    outlier: {consecutive_failures: 3, base_ejection_s: 30, max_ejection_percent: 100}\n"
    )
    try:
        with (
            running_gateway(["--config", str(config)], tmp_path / "gateway.log") as gateway,
            grpc.insecure_channel(gateway.admin_address) as channel,
        ):
            client = grpcclient.InferenceServerClient(gateway.address)
            auth = (("authorization", f"Bearer {TOKEN}"),)
            admin = admin_pb2_grpc.GatewayAdminStub(channel)

            def endpoint() -> admin_pb2.EndpointStats:
                stats = admin.GetPoolStats(admin_pb2.GetPoolStatsRequest(), metadata=auth, timeout=10)
                return stats.pools[0].endpoints[0]

            for sent in range(1, 6):
                with pytest.raises(grpcclient.InferenceServerException) as error:
                    client.infer("doubler", [_input(np.array([1.0], dtype=np.float32), "x")])
                assert error.value.status() == "StatusCode.UNAVAILABLE"  # passed on as the server sent it
                assert endpoint().ejected == (sent >= 3), sent
            assert endpoint().ejections == 1  # failures while out do not eject it again
    finally:
        bad.stop(None)


def test_max_connection_age_makes_a_long_lived_client_reconnect(triton: TritonCli, tmp_path: Path) -> None:
    args = ["--upstream", triton.address, "--metrics-port", "0", "--max-connection-age", "0.3"]
    with running_gateway(args, tmp_path / "gateway.log") as gateway:
        client = grpcclient.InferenceServerClient(gateway.address)  # one channel throughout
        tensor = _input(np.ones(4, dtype=np.float32))
        deadline = time.monotonic() + 1.5
        answered = 0
        while time.monotonic() < deadline:
            client.infer("identity", [tensor])  # none fails: GOAWAY lets the calls under way finish
            answered += 1
        client.close()
        accepted = scrape_metrics(gateway.metrics_address)[("gateway_connections_accepted_total", frozenset())]
    assert answered > 20
    assert accepted >= 3, accepted


class OtherStatesServer(OnlyMetadataServer):
    """A repository index that ignores the `ready` filter and spells states its own way."""

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        listed = [("1", "Ready"), ("2", "Unavailable"), ("3", "AVAILABLE"), ("4", "Loading")]
        models = [pb.RepositoryIndexResponse.ModelIndex(name="doubler", version=v, state=s) for v, s in listed]
        return pb.RepositoryIndexResponse(models=models)


def test_model_states_in_other_spellings_are_understood(tmp_path: Path) -> None:
    server, address = _serve(OtherStatesServer())
    args = ["--upstream", address, "--admin-port", "0", "--admin-token", TOKEN]
    try:
        with (
            running_gateway(args, tmp_path / "gateway.log") as gateway,
            grpc.insecure_channel(gateway.address) as channel,
            grpc.insecure_channel(gateway.admin_address) as admin_channel,
        ):
            request = pb.ModelInferRequest(model_name="doubler")
            request.inputs.add(name="x", datatype="FP32", shape=[1])
            request.raw_input_contents.append(np.ones(1, np.float32).tobytes())
            _, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(request, timeout=10)
            assert dict(call.trailing_metadata())["x-gateway-variant"] == "3"  # the latest that serves
            routes = admin_pb2_grpc.GatewayAdminStub(admin_channel).GetRoutes(
                admin_pb2.GetRoutesRequest(model="doubler"),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=10,
            )
            assert [(v.name, v.weight) for v in routes.routes[0].variants] == [("1", 0), ("3", 100)]
    finally:
        server.stop(None)


def test_a_variant_named_by_the_caller_is_readdressed_in_metadata_rpcs(triton: TritonCli, tmp_path: Path) -> None:
    """ModelReady for version "canary" asks Triton about the version that variant is pinned to."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\npools:\n  main:\n    endpoints: [{triton.address}]\n"
        "routes:\n  digits:\n    variants:\n"
        "      - {name: stable, pool: main, model: classifier, version: '1', weight: 100}\n"
        "      - {name: canary, pool: main, model: classifier, version: '2', weight: 0}\n"
    )
    with running_gateway(["--config", str(config)], tmp_path / "gateway.log") as gateway:
        client = grpcclient.InferenceServerClient(gateway.address)
        assert client.is_model_ready("digits", "canary")
        assert client.is_model_ready("digits", "stable")
        assert client.is_model_ready("digits", "2")
        assert client.get_model_metadata("digits", "canary").name == "digits"  # renamed back
        assert not client.is_model_ready("digits", "7")  # no such version upstream


def test_a_streamed_message_over_the_size_limit_ends_the_stream(triton: TritonCli, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nmax_message_bytes: 1000\ndefault_pool: main\n"
        f"pools:\n  main:\n    endpoints: [{triton.address}]\n"
    )
    with (
        running_gateway(["--config", str(config)], tmp_path / "gateway.log") as gateway,
        grpc.insecure_channel(gateway.address) as channel,
    ):
        request = pb.ModelInferRequest(model_name="identity")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1000])
        request.raw_input_contents.append(np.zeros(1000, np.float32).tobytes())
        stream = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([request]), timeout=10)
        with pytest.raises(grpc.RpcError) as error:
            list(stream)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in str(error.value.details())
