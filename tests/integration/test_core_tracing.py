"""Traces of the core, exported over OTLP/gRPC to a real receiver: the span tree of a
request, the caller's trace continued, errors marked, `traceparent` into the upstream only when
sampled, shadow copies in traces of their own, and the trace continued inside Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import TritonOptions, TritonProcess
from tests.otlp import OtlpHttpReceiver, OtlpReceiver, ReceivedSpan
from tests.procs import TritonCli, running_gateway
from tests.recording import RecordingTriton

SERVER, CLIENT = 2, 3
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[3])
    request.raw_input_contents.append(np.arange(3, dtype=np.float32).tobytes())
    return request


@pytest.fixture(scope="module")
def otel_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonProcess, OtlpHttpReceiver]]:
    receiver = OtlpHttpReceiver()
    trace_flags = (
        "--trace-config=mode=opentelemetry",
        f"--trace-config=opentelemetry,url=127.0.0.1:{receiver.port}/v1/traces",
        "--trace-config=opentelemetry,bsp_schedule_delay=100",
        "--trace-config=rate=1",
        "--trace-config=level=TIMESTAMPS",
    )
    triton = TritonProcess(TritonOptions(grpc_port=free_port(), extra_args=trace_flags))
    with (tmp_path_factory.mktemp("otel") / "triton.log").open("wb") as log:
        triton.start(log)
    triton.wait_ready()
    yield triton, receiver
    triton.stop()
    receiver.close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    yield otlp
    otlp.close()


def _traced(
    upstream: str, receiver: OtlpReceiver, tmp_path: Path, ratio: float = 1.0, **extra: object
) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:0", "pools": {"main": {"endpoints": [upstream]}},
        "default_pool": "main", "drain_delay_s": 0,
        "telemetry": {"otlp_endpoint": receiver.address, "trace_sample_ratio": ratio}, **extra,
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        yield gateway


def _infer(address: str, request: pb.ModelInferRequest, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    with grpc.insecure_channel(address) as channel:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=10)


def _tree(receiver: OtlpReceiver, server: ReceivedSpan) -> dict[str, ReceivedSpan]:
    return {s.name: s for s in receiver.spans if s.trace_id == server.trace_id}


def test_one_request_gives_the_expected_span_tree(triton: TritonCli, receiver: OtlpReceiver, tmp_path: Path) -> None:
    for gateway in _traced(triton.address, receiver, tmp_path):
        _infer(gateway.address, _identity())
        _infer(gateway.address, _identity())  # the second has a warm signature cache
        receiver.wait_for("inference.GRPCInferenceService/ModelInfer", 2)
    servers = [s for s in receiver.spans if s.name == "inference.GRPCInferenceService/ModelInfer"]
    server = servers[-1]
    by_name = _tree(receiver, server)
    assert server.kind == SERVER and server.parent_id == "" and server.service == "triton-gateway"
    for child in ("route", "validate", "upstream ModelInfer"):
        assert by_name[child].parent_id == server.span_id, child
    assert by_name["upstream ModelInfer"].kind == CLIENT
    attributes = server.attributes
    assert attributes["gateway.model"] == "identity" and attributes["gateway.variant"] == "1"
    assert attributes["rpc.grpc.status_code"] == "OK" and attributes["gateway.cache"] == "bypass"
    assert attributes["gateway.retries"] == 0 and not server.error


def test_incoming_traceparent_is_continued_and_errors_mark_the_span(
    triton: TritonCli, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    for gateway in _traced(triton.address, receiver, tmp_path):
        _infer(gateway.address, _identity(), (("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),))
        with pytest.raises(grpc.RpcError):
            _infer(gateway.address, pb.ModelInferRequest(model_name="no_such_model"))
        servers = receiver.wait_for("inference.GRPCInferenceService/ModelInfer", 2)
    continued = next(s for s in servers if s.trace_id == TRACE_ID)
    assert continued.parent_id == PARENT_SPAN
    failed = next(s for s in servers if s.trace_id != TRACE_ID)
    assert failed.attributes["rpc.grpc.status_code"] == "NOT_FOUND" and failed.error


@pytest.mark.parametrize(("ratio", "propagated"), [(0.0, False), (1.0, True)])
def test_traceparent_goes_upstream_only_when_sampled(
    recorder: tuple[RecordingTriton, str], receiver: OtlpReceiver, tmp_path: Path, ratio: float, propagated: bool
) -> None:
    servicer, upstream = recorder
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
    request.raw_input_contents.append(b"\0" * 4)
    for gateway in _traced(upstream, receiver, tmp_path, ratio):
        _infer(gateway.address, request)
        if propagated:
            receiver.wait_for("upstream ModelInfer")
    sent = servicer.traceparents[-1]
    if not propagated:
        assert sent is None and [s for s in receiver.spans if s.name.endswith("ModelInfer")] == []
        return
    attempt = next(s for s in receiver.spans if s.name == "upstream ModelInfer")
    assert sent is not None and sent.split("-")[1:3] == [attempt.trace_id, attempt.span_id]


def test_shadow_copies_are_linked_not_children(triton: TritonCli, receiver: OtlpReceiver, tmp_path: Path) -> None:
    variants = [{"name": "1", "pool": "main", "model": "classifier", "version": "1", "weight": 1},
                {"name": "2", "pool": "main", "model": "classifier", "version": "2", "weight": 0}]  # fmt: skip
    routes = {"classifier": {"variants": variants, "shadows": [{"variant": "2", "fraction": 1.0}]}}
    request = pb.ModelInferRequest(model_name="classifier")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros(64, np.float32).tobytes())
    for gateway in _traced(triton.address, receiver, tmp_path, routes=routes):
        _infer(gateway.address, request)
        (shadow,) = receiver.wait_for("shadow ModelInfer")
    server = next(s for s in receiver.spans if s.name == "inference.GRPCInferenceService/ModelInfer")
    assert shadow.parent_id == "" and shadow.trace_id != server.trace_id
    assert shadow.links == [(server.trace_id, server.span_id)]
    copy = next(s for s in receiver.spans if s.name == "upstream ModelInfer" and s.trace_id == shadow.trace_id)
    assert copy.parent_id == shadow.span_id  # the copy's attempt hangs under the shadow span


def test_the_trace_continues_inside_triton(
    otel_triton: tuple[TritonProcess, OtlpHttpReceiver], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Triton (in its OpenTelemetry trace mode) reports spans in the gateway's trace, its request
    span a child of the gateway's upstream attempt span.

    Triton 2.51 itself drops an incoming `traceparent` now and then (about 1 request in 20 starts a
    fresh trace: reproduced with plain tritonclient calls straight to Triton, no gateway involved),
    so several requests go, each in its own trace: every request Triton continued must hang under
    its attempt span, and at least one must be continued (all five lost would take ~3e-7 by
    Triton's flake alone; the gateway's own propagation is checked exactly by
    test_traceparent_goes_upstream_only_when_sampled)."""
    triton, triton_spans = otel_triton
    trace_ids = [f"{TRACE_ID[:-2]}{n:02x}" for n in range(5)]
    for gateway in _traced(triton.options.grpc_target, receiver, tmp_path):
        for trace_id in trace_ids:
            _infer(gateway.address, _identity(), (("traceparent", f"00-{trace_id}-{PARENT_SPAN}-01"),))
        receiver.wait_for("upstream ModelInfer", len(trace_ids))
    attempts = {s.trace_id: s for s in receiver.spans if s.name == "upstream ModelInfer"}
    assert sorted(attempts) == sorted(trace_ids)
    requests = triton_spans.wait_for_spans("InferRequest", len(trace_ids), 30.0)
    continued = [s for s in requests if s["traceId"] in attempts]
    assert continued, requests
    for span in continued:
        assert span["parentSpanId"] == attempts[span["traceId"]].span_id
