"""Model signatures fetched from the pool that serves each model, cached with a TTL.

Concurrent misses for the same model share one fetch, so a burst of first requests costs Triton
one ModelMetadata + ModelConfig pair, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import grpc
from tritonclient.grpc import service_pb2

from gateway.errors import ModelNotFound, UpstreamError
from gateway.signature import ModelSignature
from gateway.upstream import Pool
from router import Variant

__all__ = ["SignatureCache"]

_Key = tuple[str, str, str]


class SignatureCache:
    def __init__(self, pools: Mapping[str, Pool], ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self._pools = pools
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[_Key, tuple[float, ModelSignature]] = {}
        self._inflight: dict[_Key, asyncio.Task[ModelSignature]] = {}

    async def get(self, target: Variant, timeout: float | None) -> ModelSignature:
        key = (target.pool, target.model, target.version)
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(target, timeout))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        # shield: a caller that gives up must not cancel the fetch the others are waiting on.
        signature = await asyncio.shield(task)
        self._entries[key] = (self._clock() + self._ttl_s, signature)
        return signature

    async def _fetch(self, target: Variant, timeout: float | None) -> ModelSignature:
        pool = self._pools[target.pool]
        metadata_request = service_pb2.ModelMetadataRequest(name=target.model, version=target.version)
        config_request = service_pb2.ModelConfigRequest(name=target.model, version=target.version)
        try:
            metadata_bytes, config_bytes = await asyncio.gather(
                pool.call("ModelMetadata", metadata_request.SerializeToString(), timeout),
                pool.call("ModelConfig", config_request.SerializeToString(), timeout),
            )
        except UpstreamError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                raise ModelNotFound(f"{exc.message} (pool '{target.pool}')") from exc
            raise
        metadata = service_pb2.ModelMetadataResponse.FromString(metadata_bytes)
        config = service_pb2.ModelConfigResponse.FromString(config_bytes).config
        return ModelSignature.from_triton(metadata, config)
