"""Traces: an in-process gateway with an injected tracer provider and an in-memory exporter."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.config import TelemetryConfig, parse_config
from gateway.localrun import free_port
from gateway.server import Gateway
from gateway.telemetry import Telemetry
from gateway.triton import TritonOptions, TritonProcess
from tests.procs import TritonCli
from tests.recording import RecordingTriton

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[3])
    request.raw_input_contents.append(np.arange(3, dtype=np.float32).tobytes())
    return request


class Traced:
    def __init__(self, gateway: Gateway, exporter: InMemorySpanExporter, address: str) -> None:
        self.gateway = gateway
        self.exporter = exporter
        self.address = address

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


async def _start(upstream: str, ratio: float, routes: Mapping[str, object] | None = None) -> Traced:
    config = parse_config({
        "listen": "127.0.0.1:0", "pools": {"main": {"endpoints": [upstream]}}, "default_pool": "main",
        "drain_delay_s": 0, "routes": routes or {},
    })  # fmt: skip
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = Gateway(config, telemetry=Telemetry(TelemetryConfig(), provider=provider))
    port, _ = await gateway.start()
    return Traced(gateway, exporter, f"127.0.0.1:{port}")


@pytest.fixture
async def traced(triton: TritonCli) -> AsyncIterator[Traced]:
    started = await _start(triton.address, 1.0)
    yield started
    await started.gateway.stop()


async def _infer(address: str, request: pb.ModelInferRequest, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=10)


async def test_one_request_gives_the_expected_span_tree(traced: Traced) -> None:
    await _infer(traced.address, _identity())
    await _infer(traced.address, _identity())  # the second has a warm signature cache
    spans = [s for s in traced.spans() if s.context.trace_id == traced.spans()[-1].context.trace_id]
    by_name = {s.name: s for s in spans}
    server = by_name["inference.GRPCInferenceService/ModelInfer"]
    assert server.kind is SpanKind.SERVER and server.parent is None
    for child in ("route", "validate", "upstream ModelInfer"):
        parent = by_name[child].parent
        assert parent is not None and parent.span_id == server.context.span_id
    assert by_name["upstream ModelInfer"].kind is SpanKind.CLIENT
    attributes = server.attributes or {}
    assert attributes["gateway.model"] == "identity" and attributes["gateway.variant"] == "1"
    assert attributes["rpc.grpc.status_code"] == "OK" and attributes["gateway.cache"] == "bypass"
    assert attributes["gateway.retries"] == 0


async def test_incoming_traceparent_is_continued(traced: Traced) -> None:
    await _infer(traced.address, _identity(), (("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),))
    server = next(s for s in traced.spans() if s.kind is SpanKind.SERVER)
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN


async def test_errors_mark_the_span(traced: Traced) -> None:
    request = pb.ModelInferRequest(model_name="no_such_model")
    with pytest.raises(grpc.aio.AioRpcError):
        await _infer(traced.address, request)
    server = next(s for s in traced.spans() if s.kind is SpanKind.SERVER)
    assert (server.attributes or {})["rpc.grpc.status_code"] == "NOT_FOUND"
    assert not server.status.is_ok


@pytest.mark.parametrize(("ratio", "propagated"), [(0.0, False), (1.0, True)])
async def test_traceparent_goes_upstream_only_when_sampled(
    recorder: tuple[RecordingTriton, str],
    ratio: float,
    propagated: bool,
) -> None:
    servicer, upstream = recorder
    started = await _start(upstream, ratio)
    try:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1])
        request.raw_input_contents.append(b"\0" * 4)
        await _infer(started.address, request)
    finally:
        await started.gateway.stop()
    sent = servicer.traceparents[-1]
    if not propagated:
        assert sent is None and started.spans() == []
        return
    server = next(s for s in started.spans() if s.kind is SpanKind.SERVER)
    assert sent is not None and sent.split("-")[1] == format(server.context.trace_id, "032x")
    attempt = next(s for s in started.spans() if s.name == "upstream ModelInfer")
    assert sent.split("-")[2] == format(attempt.context.span_id, "016x")  # Triton's parent: the attempt span


async def test_shadow_copies_are_linked_not_children(triton: TritonCli) -> None:
    variants = [{"name": "1", "pool": "main", "model": "classifier", "version": "1", "weight": 1},
                {"name": "2", "pool": "main", "model": "classifier", "version": "2", "weight": 0}]  # fmt: skip
    routes = {"classifier": {"variants": variants, "shadows": [{"variant": "2", "fraction": 1.0}]}}
    started = await _start(triton.address, 1.0, routes)
    try:
        request = pb.ModelInferRequest(model_name="classifier")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
        request.raw_input_contents.append(np.zeros(64, np.float32).tobytes())
        await _infer(started.address, request)
    finally:
        await started.gateway.stop()  # waits for the shadow copy
    server = next(s for s in started.spans() if s.kind is SpanKind.SERVER)
    shadow = next(s for s in started.spans() if s.name == "shadow ModelInfer")
    assert shadow.parent is None and shadow.context.trace_id != server.context.trace_id
    assert [link.context.span_id for link in shadow.links] == [server.context.span_id]


class OtlpHttpReceiver:
    """A minimal OTLP/HTTP trace receiver (Triton's exporter posts JSON to /v1/traces)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with receiver._arrived:
                    for resource in body.get("resourceSpans", []):
                        for scope in resource.get("scopeSpans", []):
                            receiver.spans.extend(scope.get("spans", []))
                    receiver._arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for_spans(self, name: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
        with self._arrived:
            self._arrived.wait_for(lambda: sum(s["name"] == name for s in self.spans) >= count, timeout_s)
            return [s for s in self.spans if s["name"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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


async def test_the_trace_continues_inside_triton(otel_triton: tuple[TritonProcess, OtlpHttpReceiver]) -> None:
    """Triton (in its OpenTelemetry trace mode) reports spans in the gateway's trace, its request
    span a child of the gateway's upstream attempt span.

    Triton 2.51 itself drops an incoming `traceparent` now and then (about 1 request in 20 starts a
    fresh trace: reproduced with plain tritonclient calls straight to Triton,
    no gateway involved), so several requests go, each in its own trace: every request Triton
    continued must hang under its attempt span, and at least one must be continued (all five lost
    would take ~3e-7 by Triton's flake alone, and the gateway's own propagation is checked exactly
    by test_traceparent_goes_upstream_only_when_sampled)."""
    triton, receiver = otel_triton
    trace_ids = [f"{TRACE_ID[:-2]}{n:02x}" for n in range(5)]
    started = await _start(triton.options.grpc_target, 1.0)
    try:
        for trace_id in trace_ids:
            await _infer(started.address, _identity(), (("traceparent", f"00-{trace_id}-{PARENT_SPAN}-01"),))
    finally:
        await started.gateway.stop()
    attempts = {format(s.context.trace_id, "032x"): s for s in started.spans() if s.name == "upstream ModelInfer"}
    assert sorted(attempts) == sorted(trace_ids)
    requests = await asyncio.to_thread(receiver.wait_for_spans, "InferRequest", len(trace_ids), 30.0)
    continued = [s for s in requests if s["traceId"] in attempts]
    seen = {(s["traceId"], s["name"], s.get("parentSpanId")) for s in receiver.spans}
    assert len(requests) == len(trace_ids) and continued, seen
    for span in continued:
        assert span["parentSpanId"] == format(attempts[span["traceId"]].context.span_id, "016x"), seen
    names = {s["name"] for s in receiver.spans if s["traceId"] == continued[0]["traceId"]}
    assert names >= {"InferRequest", "identity", "compute"}, seen
