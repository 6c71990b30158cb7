"""`inference.GRPCInferenceService`, served with raw bytes in and out.

Each RPC is a few lines handing off to the data plane. The boundary here is the only place that
turns exceptions into statuses: a GatewayError becomes its own code and message; anything else is
logged with a request id and reaches the caller as INTERNAL naming that id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias

import grpc
from tritonclient.grpc import service_pb2

from gateway.dataplane import MODEL_SCOPED, DataPlane
from gateway.errors import GatewayError, NotSupported, Overloaded
from gateway.health import HealthMonitor
from gateway.stream import proxy_stream
from gateway.telemetry import RequestRecord, Telemetry, current
from gateway.upstream import INFERENCE_SERVICE

__all__ = ["CACHE_KEY", "VARIANT_KEY", "InFlight", "inference_handler", "request_metadata"]

VARIANT_KEY = "x-gateway-variant"  # response (trailing) metadata: the variant that answered
CACHE_KEY = "x-cache"  # response (trailing) metadata: hit-l1 | hit-l2 | miss | bypass
RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata of RESOURCE_EXHAUSTED: when to try again

log = logging.getLogger(__name__)

Context: TypeAlias = "grpc.aio.ServicerContext[bytes, bytes]"
Handler: TypeAlias = "grpc.RpcMethodHandler[bytes, bytes]"
Unary = Callable[[bytes, Context], Awaitable[bytes]]
Streaming = Callable[[AsyncIterator[bytes], Context], AsyncIterator[bytes]]

_SHARED_MEMORY_RPCS = (
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
)
_SHARED_MEMORY_WHY = (
    "{method} is not available through the gateway: shared-memory regions live on the Triton host, "
    "which the gateway may not share with you; send tensors in the request (raw_input_contents) instead"
)


class InFlight:
    """Counts data-plane RPCs in progress, so shutdown knows when the last one has finished."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        self.count += 1
        self._idle.clear()

    def __exit__(self, *_: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


def request_metadata(context: Context) -> dict[str, str]:
    """The caller's text metadata (keys are lower-case in gRPC); binary `-bin` values are left out."""
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def _status(exc: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, GatewayError):
        return exc.code, exc.message
    return grpc.StatusCode.INTERNAL, ""


async def _abort(context: Context, exc: Exception, record: RequestRecord, telemetry: Telemetry) -> None:
    """Answer with the failure's status. The record is closed first: once the caller has the
    status, the metrics and the access log already count it."""
    code, message = _status(exc)
    record.code = code.name
    trailing = list(record.trailing)
    if isinstance(exc, Overloaded):
        trailing.append((RETRY_AFTER_KEY, str(exc.retry_after_ms)))
    if not isinstance(exc, GatewayError):
        log.error("internal error, request id %s", record.request_id, exc_info=exc)
        message = f"internal gateway error (request id {record.request_id})"
    telemetry.end(record)
    await context.abort(code, message, tuple(trailing))


def _end_cancelled(context: Context, record: RequestRecord, telemetry: Telemetry) -> None:
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    record.code = (grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED).name
    telemetry.end(record)


def _unary(method: str, handler: Unary, inflight: InFlight, telemetry: Telemetry) -> Handler:
    async def run(payload: bytes, context: Context) -> bytes:
        record = telemetry.begin(method, request_metadata(context), len(payload), context.peer())
        try:
            with inflight, telemetry.scope(record):
                response = await handler(payload, context)
        except Exception as exc:  # the boundary: every failure becomes a status here
            await _abort(context, exc, record, telemetry)
            raise  # unreachable: abort raises
        except BaseException:  # cancelled: the caller left or its deadline passed
            _end_cancelled(context, record, telemetry)
            raise
        record.bytes_out = len(response)
        context.set_trailing_metadata(tuple(record.trailing))
        if record.sample_payload:
            record.payloads = (payload, response)
        telemetry.end(record)
        return response

    return grpc.unary_unary_rpc_method_handler(run)


def _streaming(method: str, handler: Streaming, inflight: InFlight, telemetry: Telemetry) -> Handler:
    async def run(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        record = telemetry.begin(method, request_metadata(context), 0, context.peer())
        try:
            with inflight, telemetry.scope(record):
                async for response in handler(requests, context):
                    record.bytes_out += len(response)
                    yield response
        except Exception as exc:
            await _abort(context, exc, record, telemetry)
            return
        except BaseException:
            _end_cancelled(context, record, telemetry)
            raise
        context.set_trailing_metadata(tuple(record.trailing))
        telemetry.end(record)

    return grpc.stream_stream_rpc_method_handler(run)


def inference_handler(
    dataplane: DataPlane, health: HealthMonitor, inflight: InFlight, telemetry: Telemetry
) -> grpc.GenericRpcHandler[bytes, bytes]:
    async def server_live(payload: bytes, context: Context) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    async def server_ready(payload: bytes, context: Context) -> bytes:
        return service_pb2.ServerReadyResponse(ready=health.all_pools_ready()).SerializeToString()

    async def model_infer(payload: bytes, context: Context) -> bytes:
        record = current()
        assert record is not None, "the boundary opens a record for every RPC"
        response, prepared, cache = await dataplane.infer(payload, record.metadata, context.time_remaining())
        record.trailing.append((VARIANT_KEY, prepared.decision.primary.name))
        if cache is not None:
            record.trailing.append((CACHE_KEY, cache))
        return response

    def model_scoped(method: str) -> Unary:
        async def call(payload: bytes, context: Context) -> bytes:
            return await dataplane.model_rpc(method, payload, context.time_remaining())

        return call

    def server_wide(method: str, fan_out: bool) -> Unary:
        async def call(payload: bytes, context: Context) -> bytes:
            send = dataplane.fan_out if fan_out else dataplane.first_pool
            return await send(method, payload, context.time_remaining())

        return call

    def unsupported(method: str) -> Unary:
        async def call(payload: bytes, context: Context) -> bytes:
            raise NotSupported(_SHARED_MEMORY_WHY.format(method=method))

        return call

    def model_stream_infer(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        record = current()
        metadata = record.metadata if record is not None else request_metadata(context)
        return proxy_stream(dataplane, requests, metadata, context.time_remaining())

    unary: dict[str, Unary] = {
        "ServerLive": server_live,
        "ServerReady": server_ready,
        "ModelInfer": model_infer,
        "ServerMetadata": server_wide("ServerMetadata", fan_out=False),
        "RepositoryIndex": server_wide("RepositoryIndex", fan_out=True),
        "LogSettings": server_wide("LogSettings", fan_out=True),
    }
    unary |= {method: model_scoped(method) for method in MODEL_SCOPED}
    unary |= {method: unsupported(method) for method in _SHARED_MEMORY_RPCS}
    handlers = {method: _unary(method, call, inflight, telemetry) for method, call in unary.items()}
    handlers["ModelStreamInfer"] = _streaming("ModelStreamInfer", model_stream_infer, inflight, telemetry)
    missing = set(service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name) - set(handlers)
    assert not missing, f"unhandled RPCs: {missing}"
    return grpc.method_handlers_generic_handler(INFERENCE_SERVICE, handlers)
