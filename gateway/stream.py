"""ModelStreamInfer as a bidirectional passthrough.

Each request of the caller's stream is routed and validated on its own; it goes up one long-lived
stream per (pool, upstream model), and their responses are merged back into the caller's stream
as they come. One model per upstream stream is deliberate: Triton 2.51 aborts
(`ASSERTION FAILED: !byte_buffer->Valid()`) when responses of different models race on one stream.
A request that fails validation gets an in-stream error response (as Triton does) and the stream
goes on; a broken upstream stream ends the caller's stream with the mapped status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import grpc
from tritonclient.grpc import service_pb2

from gateway.dataplane import DataPlane, parse
from gateway.errors import GatewayError
from gateway.upstream import Endpoint, Pool, RawStreamCall

__all__ = ["proxy_stream"]

_Outbound = asyncio.Queue[bytes | GatewayError | None]


def _error_response(request_id: str, model: str, error: GatewayError) -> bytes:
    response = service_pb2.ModelStreamInferResponse(error_message=error.message)
    response.infer_response.id = request_id
    response.infer_response.model_name = model
    serialized: bytes = response.SerializeToString()
    return serialized


class _UpstreamStreams:
    """The caller's stream fanned out: one upstream call per (pool, model), opened on first use."""

    def __init__(self, outbound: _Outbound, timeout: float | None) -> None:
        self._outbound = outbound
        self._timeout = timeout
        self._calls: dict[tuple[str, str], tuple[RawStreamCall, Endpoint]] = {}
        self._pumps: list[asyncio.Task[None]] = []

    async def _pump(self, call: RawStreamCall, endpoint: Endpoint, pool: str) -> None:
        try:
            async for response in call:
                await self._outbound.put(response)
        except grpc.aio.AioRpcError as exc:
            await self._outbound.put(endpoint.failure(exc, pool))

    async def send(self, pool: Pool, model: str, payload: bytes) -> None:
        key = (pool.name, model)
        if key not in self._calls:
            endpoint = pool.pick()
            call = endpoint.stream(None, timeout=self._timeout)
            self._calls[key] = (call, endpoint)
            self._pumps.append(asyncio.create_task(self._pump(call, endpoint, pool.name)))
        call, endpoint = self._calls[key]
        try:
            await call.write(payload)
        except grpc.aio.AioRpcError as exc:
            await self._outbound.put(endpoint.failure(exc, pool.name))

    async def finish(self) -> None:
        for call, _ in self._calls.values():
            await call.done_writing()
        await asyncio.gather(*self._pumps)

    def cancel(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        for call, _ in self._calls.values():
            call.cancel()


async def proxy_stream(
    dataplane: DataPlane, requests: AsyncIterator[bytes], metadata: Mapping[str, str], timeout: float | None
) -> AsyncIterator[bytes]:
    outbound: _Outbound = asyncio.Queue()
    upstreams = _UpstreamStreams(outbound, timeout)

    async def forward_requests() -> None:
        try:
            async for payload in requests:
                request = parse(service_pb2.ModelInferRequest, payload)
                try:
                    prepared = await dataplane.prepare_infer(request, payload, metadata, timeout)
                except GatewayError as exc:
                    await outbound.put(_error_response(request.id, request.model_name, exc))
                    continue
                await upstreams.send(prepared.pool, prepared.decision.primary.model, prepared.payload)
            await upstreams.finish()
        finally:
            await outbound.put(None)

    reader = asyncio.create_task(forward_requests())
    try:
        while (item := await outbound.get()) is not None:
            if isinstance(item, GatewayError):
                raise item
            yield item
        await reader  # surfaces a malformed request or a reader failure
    finally:
        reader.cancel()
        upstreams.cancel()
