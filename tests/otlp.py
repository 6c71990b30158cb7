"""Real trace receivers on 127.0.0.1: OTLP/gRPC (the collector the core exports to) and OTLP/HTTP
(Triton's own exporter posts JSON)."""

from __future__ import annotations

import http.server
import json
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: int  # 1 internal, 2 server, 3 client
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    error: bool
    service: str = field(default="")


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._arrived = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource in request.resource_spans:
            service = {a.key: _value(a.value) for a in resource.resource.attributes}.get("service.name", "")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    received.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        error=span.status.code == 2, service=service,
                    ))  # fmt: skip
        with self._arrived:
            self.spans.extend(received)
            self._arrived.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        with self._arrived:
            self._arrived.wait_for(lambda: sum(s.name == name for s in self.spans) >= count, timeout_s)
            return [s for s in self.spans if s.name == name]

    def close(self) -> None:
        self._server.stop(None)


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
