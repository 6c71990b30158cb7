"""The data plane: everything the servicer hands a request to.

ModelInfer: parse → route → signature → validate → forward the caller's bytes (re-serialized
only when the route renames the model or pins a version). Model-scoped metadata RPCs go to the
pool that serves the model; server-wide ones to every pool, their answers merged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.signatures import SignatureCache
from gateway.upstream import Pool
from gateway.validate import validate_infer_request
from router import RouteTable, Target, UnknownModel

__all__ = ["MODEL_SCOPED", "DataPlane", "ModelScoped"]


@dataclass(frozen=True, slots=True)
class ModelScoped:
    """A unary RPC whose request names a model: which fields hold the name and version."""

    request: type[Message]
    name_field: str
    version_field: str | None


MODEL_SCOPED: dict[str, ModelScoped] = {
    "ModelReady": ModelScoped(service_pb2.ModelReadyRequest, "name", "version"),
    "ModelMetadata": ModelScoped(service_pb2.ModelMetadataRequest, "name", "version"),
    "ModelConfig": ModelScoped(service_pb2.ModelConfigRequest, "name", "version"),
    "ModelStatistics": ModelScoped(service_pb2.ModelStatisticsRequest, "name", "version"),
    "RepositoryModelLoad": ModelScoped(service_pb2.RepositoryModelLoadRequest, "model_name", None),
    "RepositoryModelUnload": ModelScoped(service_pb2.RepositoryModelUnloadRequest, "model_name", None),
    "TraceSetting": ModelScoped(service_pb2.TraceSettingRequest, "model_name", None),
}


M = TypeVar("M", bound=Message)


def parse(message_type: type[M], payload: bytes) -> M:
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        raise InvalidRequest(f"malformed {message_type.DESCRIPTOR.name}: {exc}") from exc


def _rename(response: bytes, method: str, public: str) -> bytes:
    """Show the caller the public model name where Triton answered with the upstream one."""
    if method == "ModelMetadata":
        metadata = service_pb2.ModelMetadataResponse.FromString(response)
        metadata.name = public
        return metadata.SerializeToString()
    if method == "ModelConfig":
        config = service_pb2.ModelConfigResponse.FromString(response)
        config.config.name = public
        return config.SerializeToString()
    return response


class DataPlane:
    def __init__(self, routes: RouteTable, pools: Mapping[str, Pool], signatures: SignatureCache) -> None:
        self.routes = routes
        self.pools = pools
        self.signatures = signatures

    def resolve(self, model: str, version: str) -> tuple[Target, Pool]:
        if not model:
            raise InvalidRequest("the request names no model")
        try:
            target = self.routes.resolve(model, version)
        except UnknownModel as exc:
            raise ModelNotFound(f"unknown model '{model}': {exc}") from exc
        return target, self.pools[target.pool]

    async def infer(self, payload: bytes, timeout: float | None) -> bytes:
        request = parse(service_pb2.ModelInferRequest, payload)
        forwarded, pool = await self.prepare_infer(request, payload, timeout)
        return await pool.call("ModelInfer", forwarded, timeout)

    async def prepare_infer(
        self, request: service_pb2.ModelInferRequest, payload: bytes, timeout: float | None
    ) -> tuple[bytes, Pool]:
        """Validate the request for its target; the bytes to send upstream and the pool to send to."""
        target, pool = self.resolve(request.model_name, request.model_version)
        signature = await self.signatures.get(target, timeout)
        validate_infer_request(request, signature)
        if target.model == request.model_name and target.version == request.model_version:
            return payload, pool
        request.model_name, request.model_version = target.model, target.version
        return request.SerializeToString(), pool

    async def model_rpc(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        scoped = MODEL_SCOPED[method]
        request = parse(scoped.request, payload)
        public = getattr(request, scoped.name_field)
        if not public:  # statistics or trace settings for every model: ask every pool
            return await self.fan_out(method, payload, timeout)
        version = getattr(request, scoped.version_field) if scoped.version_field else ""
        target, pool = self.resolve(public, version)
        if target.model == public and target.version == version:
            return await pool.call(method, payload, timeout)
        setattr(request, scoped.name_field, target.model)
        if scoped.version_field:
            setattr(request, scoped.version_field, target.version)
        response = await pool.call(method, request.SerializeToString(), timeout)
        return _rename(response, method, public) if target.model != public else response

    def pools_in_use(self) -> list[Pool]:
        """Default pool first, so server-wide answers (ServerMetadata) come from it."""
        names = sorted(self.routes.pools(), key=lambda name: name != self.routes.default_pool)
        return [self.pools[name] for name in names]

    async def first_pool(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        return await self.pools_in_use()[0].call(method, payload, timeout)

    async def fan_out(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """Send to every pool; merge repeated fields of the answers (first pool wins on scalars)."""
        answers = await asyncio.gather(*(pool.call(method, payload, timeout) for pool in self.pools_in_use()))
        if len(answers) == 1:
            return answers[0]
        merged = b"".join(reversed(answers))  # protobuf: concatenation merges, last scalar wins
        return _dedupe(method, merged)


def _dedupe(method: str, merged: bytes) -> bytes:
    if method == "RepositoryIndex":
        index = service_pb2.RepositoryIndexResponse.FromString(merged)
        unique = {(m.name, m.version): m for m in index.models}
        del index.models[:]
        index.models.extend(unique.values())
        return index.SerializeToString()
    if method == "ModelStatistics":
        stats = service_pb2.ModelStatisticsResponse.FromString(merged)
        unique_stats = {(m.name, m.version): m for m in stats.model_stats}
        del stats.model_stats[:]
        stats.model_stats.extend(unique_stats.values())
        return stats.SerializeToString()
    return merged
