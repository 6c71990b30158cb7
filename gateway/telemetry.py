"""Tracing, metrics and logs around every RPC; injected providers, no globals.

The servicer boundary opens a `RequestRecord` per RPC (request id, server span, timings); the
request path fills it in (model, variant, cache result, queue wait, retries) through a context
variable, and opens child spans with `child_span`. When the RPC ends the record becomes a metrics
update, an access-log line and, for a sampled few, a payload-log line.

Trace context: an incoming W3C `traceparent`/`tracestate` (and baggage) is continued; upstream
calls carry `traceparent` only when the span is sampled, since Triton traces every request that
carries one, whatever its own rate. Shadow copies get a trace of their own, linked to the primary.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import json
import logging
import logging.handlers
import os
import queue
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from gateway.config import TelemetryConfig
from gateway.metrics import GatewayMetrics
from gateway.rollout.totals import VariantTally

__all__ = ["REQUEST_ID_KEY", "RequestRecord", "Telemetry", "child_span", "current", "outgoing_metadata"]

REQUEST_ID_KEY = "x-request-id"
_RECORD: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("gateway_request", default=None)


@dataclass
class RequestRecord:
    """What one RPC did, filled in along the request path."""

    method: str
    request_id: str
    started: float
    tracer: trace.Tracer
    span: trace.Span
    metadata: Mapping[str, str]  # the caller's text metadata, read once
    bytes_in: int = 0
    bytes_out: int = 0
    model: str = ""
    variant: str = ""
    pool: str = ""
    cache: str = ""
    queue_wait_s: float = 0.0
    upstream_s: float = 0.0
    retries: int = 0
    code: str = "OK"
    trailing: list[tuple[str, str]] = field(default_factory=list)
    payloads: tuple[bytes, bytes] | None = None  # kept only when sampled for the payload log
    sample_payload: bool = False


def current() -> RequestRecord | None:
    return _RECORD.get()


@contextlib.contextmanager
def detached() -> Iterator[None]:
    """Work done for several RPCs at once (a merged upstream call): no single record owns it."""
    token = _RECORD.set(None)
    try:
        yield
    finally:
        _RECORD.reset(token)


# Reusable: entering it does nothing and yields the invalid span. Untraced requests (the common
# case) then open no generator-based context manager per child span.
_NO_SPAN: contextlib.AbstractContextManager[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def child_span(
    name: str, attributes: Mapping[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> contextlib.AbstractContextManager[trace.Span]:
    """A child of the current RPC's span (a no-op span outside an RPC or when not recording)."""
    record = _RECORD.get()
    if record is None or not record.span.is_recording():
        return _NO_SPAN
    return record.tracer.start_as_current_span(name, kind=kind, attributes=attributes)


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """`traceparent` (and `tracestate`) for an upstream call, only when the current span is sampled."""
    span = trace.get_current_span()
    if not span.get_span_context().trace_flags.sampled:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple((key, value) for key, value in carrier.items() if key in ("traceparent", "tracestate"))


def tracer_provider(config: TelemetryConfig) -> trace.TracerProvider:
    """The provider the configuration asks for: none (no-op), console or OTLP gRPC."""
    if config.exporter == "none":
        return trace.NoOpTracerProvider()
    sampler = ParentBased(TraceIdRatioBased(config.trace_sample_ratio))
    provider = TracerProvider(sampler=sampler, resource=Resource.create({"service.name": config.service_name}))
    if config.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # only when used

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=True)))
    return provider


class _JsonLines:
    """A JSON-lines file written by a background thread, so requests never wait on disk."""

    def __init__(self, name: str, handler: logging.Handler) -> None:
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener = logging.handlers.QueueListener(self._queue, handler)
        self._logger = logging.Logger(name)
        self._logger.addHandler(logging.handlers.QueueHandler(self._queue))
        self._handler = handler
        self._listener.start()

    def write(self, entry: Mapping[str, Any]) -> None:
        self._logger.info(json.dumps(entry, separators=(",", ":")))

    def close(self) -> None:
        self._listener.stop()
        self._handler.close()


class Telemetry:
    def __init__(
        self,
        config: TelemetryConfig,
        provider: trace.TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.provider = provider if provider is not None else tracer_provider(config)
        self.tracer = self.provider.get_tracer("triton-gateway")
        self._no_tracer = isinstance(self.provider, trace.NoOpTracerProvider)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.variants = VariantTally()  # ModelInfer per variant: what rollouts judge
        self._access = None
        if config.access_log:
            access_handler: logging.Handler = (
                logging.StreamHandler(sys.stdout)
                if config.access_log == "-"
                else logging.FileHandler(config.access_log)
            )
            self._access = _JsonLines("gateway.access", access_handler)
        self._payloads = None
        if config.payload_log:
            payload = config.payload_log
            rotating = logging.handlers.RotatingFileHandler(
                payload.path, maxBytes=payload.max_bytes, backupCount=payload.backups
            )
            self._payloads = _JsonLines("gateway.payloads", rotating)
        self._draw = random.random

    def begin(self, method: str, metadata: Mapping[str, str], bytes_in: int, peer: str = "") -> RequestRecord:
        request_id = metadata.get(REQUEST_ID_KEY) or os.urandom(16).hex()
        parent = propagate.extract(metadata) if metadata else None
        if self._no_tracer:  # what a no-op tracer would start: the caller's span, passed on as it is
            span = trace.get_current_span(parent)
        else:
            span = self.tracer.start_span(
                f"inference.GRPCInferenceService/{method}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": method,
                            "gateway.request_id": request_id, "client.address": peer},
            )  # fmt: skip
        record = RequestRecord(method, request_id, time.perf_counter(), self.tracer, span, metadata, bytes_in)
        record.sample_payload = self._payloads is not None and self._draw() < self.config.payload_log.fraction  # type: ignore[union-attr]
        record.trailing.append((REQUEST_ID_KEY, request_id))
        _RECORD.set(record)
        return record

    def scope(self, record: RequestRecord) -> contextlib.AbstractContextManager[object]:
        """Make the record's span current for the RPC's own work. A span with no valid context
        (no tracer, no incoming trace) has nothing to pass on: nothing is attached."""
        if not record.span.get_span_context().is_valid:
            return _NO_SPAN
        return trace.use_span(record.span, end_on_exit=False, record_exception=False, set_status_on_exception=False)

    def end(self, record: RequestRecord) -> None:
        elapsed = time.perf_counter() - record.started
        span = record.span
        if span.is_recording():
            span.set_attributes({
                "rpc.grpc.status_code": record.code, "gateway.model": record.model, "gateway.variant": record.variant,
                "gateway.cache": record.cache, "gateway.queue_wait_ms": record.queue_wait_s * 1000,
                "gateway.retries": record.retries,
            })  # fmt: skip
            if record.code != "OK":
                span.set_status(Status(StatusCode.ERROR, record.code))
        span.end()
        metrics = self.metrics
        metrics.requests(record.method, record.model, record.variant, record.code).inc()
        metrics.duration(record.method, record.model).observe(elapsed)
        if record.method == "ModelInfer" and record.variant:
            self.variants.record(record.model, record.variant, record.code, elapsed)
        if record.upstream_s:
            metrics.upstream(record.pool, record.model).observe(record.upstream_s)
        if record.queue_wait_s:
            metrics.queue_wait(record.pool).observe(record.queue_wait_s)
        if record.cache:
            metrics.cache(record.model, record.cache).inc()
        if self._access is not None:
            self._access.write(self._access_entry(record, elapsed))
        if self._payloads is not None and record.payloads is not None:
            request, response = record.payloads
            self._payloads.write({
                "time": time.time(), "request_id": record.request_id, "model": record.model,
                "variant": record.variant, "code": record.code,
                "request": base64.b64encode(request).decode(), "response": base64.b64encode(response).decode(),
            })  # fmt: skip

    def _access_entry(self, record: RequestRecord, elapsed: float) -> dict[str, Any]:
        context = record.span.get_span_context()
        return {
            "time": time.time(), "request_id": record.request_id,
            "trace_id": format(context.trace_id, "032x") if context.is_valid else "",
            "method": record.method, "model": record.model, "variant": record.variant, "code": record.code,
            "latency_ms": round(elapsed * 1000, 3), "cache": record.cache,
            "queue_wait_ms": round(record.queue_wait_s * 1000, 3), "retries": record.retries,
            "bytes_in": record.bytes_in, "bytes_out": record.bytes_out,
        }  # fmt: skip

    @contextlib.contextmanager
    def shadow_scope(self, link: trace.SpanContext, model: str, variant: str) -> Iterator[None]:
        """A shadow copy's own trace, linked to the primary's span, with no request record."""
        record_token = _RECORD.set(None)
        links = [Link(link)] if link.is_valid else []
        attributes = {"gateway.model": model, "gateway.variant": variant}
        span = self.tracer.start_span(
            "shadow ModelInfer", context=otel_context.Context(), links=links, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, otel_context.Context()))
        try:
            yield
        finally:
            otel_context.detach(token)
            span.end()
            _RECORD.reset(record_token)

    def close(self) -> None:
        for log in (self._access, self._payloads):
            if log is not None:
                log.close()
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
