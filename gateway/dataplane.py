"""The data plane: everything the servicer hands a request to.

ModelInfer: parse → route (decision per request) → signature → validate → forward the caller's
bytes (re-serialized only when the variant renames the model or pins a version). Model-scoped
metadata RPCs go to the pool of the route's heaviest variant; server-wide ones to every pool,
their answers merged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2

from gateway.admission import Admission
from gateway.batcher import Batchers
from gateway.caching import InferenceCache
from gateway.config import AdmissionConfig
from gateway.discovery import Discovery
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.retarget import retarget_payload
from gateway.shadow import ShadowRunner
from gateway.signature import ModelSignature
from gateway.signatures import SignatureCache
from gateway.telemetry import child_span, current
from gateway.upstream import Pool
from gateway.validate import validate_infer_request
from gateway.wire import Tensor, WireError, split_tensors
from router import Decision, Route, Router, RouteStore, Variant

__all__ = ["MODEL_SCOPED", "DataPlane", "ModelScoped", "Prepared", "parse"]

M = TypeVar("M", bound=Message)


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


@dataclass(slots=True)
class Prepared:
    """A validated request, ready to go upstream."""

    caller_payload: bytes  # the request's bytes as the caller sent them
    pool: Pool
    route: Route
    decision: Decision
    request: service_pb2.ModelInferRequest  # as the caller sent it (its tensors possibly kept apart)
    signature: ModelSignature
    tensors: Sequence[Tensor]  # raw_input_contents: views of the caller's bytes, not copies
    _upstream: bytes | None = field(default=None, init=False, repr=False)  # `payload`, once made

    @property
    def payload(self) -> bytes:
        """The caller's bytes re-addressed to the chosen variant, made on first use: a request
        answered from the cache never needs them (for a large tensor, a copy saved)."""
        if self._upstream is None:
            self._upstream = retarget_payload(self.caller_payload, self.request, self.decision.primary, self.tensors)
        return self._upstream


class DataPlane:
    def __init__(
        self,
        store: RouteStore,
        router: Router,
        pools: Mapping[str, Pool],
        signatures: SignatureCache,
        discovery: Discovery | None,
        shadows: ShadowRunner | None = None,
        cache: InferenceCache | None = None,
        admissions: Mapping[str, Admission] | None = None,
        admission_config: AdmissionConfig | None = None,
        batchers: Batchers | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.pools = pools
        self.signatures = signatures
        self.discovery = discovery
        self.shadows = shadows
        self.cache = cache
        self.admissions = admissions or {}
        self.admission_config = admission_config or AdmissionConfig()
        self.batchers = batchers

    async def route(self, model: str, timeout: float | None) -> Route:
        if not model:
            raise InvalidRequest("the request names no model")
        route = self.store.get(model)
        if route is not None:
            return route
        if self.discovery is None:
            raise ModelNotFound(f"unknown model '{model}': no route serves it and there is no default pool")
        return await self.discovery.route_for(model, timeout)

    async def infer(
        self, payload: bytes, metadata: Mapping[str, str], timeout: float | None
    ) -> tuple[bytes, Prepared, str | None]:
        """Serve one ModelInfer: the response, how it was routed, and the cache outcome (if any).
        Shadow copies start once the caller has its answer."""
        try:
            header, tensors = split_tensors(payload)
        except WireError as exc:
            raise InvalidRequest(f"malformed ModelInferRequest: {exc}") from exc
        request = parse(service_pb2.ModelInferRequest, header)
        prepared = await self.prepare_infer(request, payload, metadata, timeout, tensors)

        def call() -> Awaitable[bytes]:
            return self._admitted(prepared, metadata, timeout)

        outcome = None
        if self.cache is None:
            response = await call()
        else:
            response, outcome = await self.cache.fetch(prepared, metadata, call)
            if (record := current()) is not None:
                record.cache = outcome
        if prepared.decision.shadows and self.shadows is not None:
            self.shadows.submit(prepared, response)
        return response, prepared, outcome

    async def _admitted(self, prepared: Prepared, metadata: Mapping[str, str], timeout: float | None) -> bytes:
        """The upstream call, after taking a slot of the pool's admission control (if it has one)."""
        variant = prepared.decision.primary
        model = (variant.model, variant.version)
        admission = self.admissions.get(prepared.pool.name)
        if admission is None:
            return await self._forward(prepared, model, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        priority = self._priority(prepared.request, metadata)
        async with admission.slot(priority, metadata.get(self.admission_config.tenant_header, ""), timeout):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            return await self._forward(prepared, model, remaining)

    async def _forward(self, prepared: Prepared, model: tuple[str, str], timeout: float | None) -> bytes:
        """Upstream alone, or merged with concurrent requests when the route batches."""
        batchers = self.batchers
        settings = batchers.settings(prepared.route.model, prepared.signature) if batchers else None
        if batchers is None or settings is None:
            return await prepared.pool.call("ModelInfer", prepared.payload, timeout, model)
        return await batchers.call(prepared.pool, model, prepared, settings, timeout)

    def _priority(self, request: service_pb2.ModelInferRequest, metadata: Mapping[str, str]) -> int:
        """From the priority header, else the request's `priority` parameter (Triton's: 1 is the
        highest, 0 the default); out of range values are clamped to the configured levels."""
        settings = self.admission_config
        given = metadata.get(settings.priority_header)
        if given is not None:
            value = int(given) if given.strip().isdigit() else 0
        elif "priority" in request.parameters:
            parameter = request.parameters["priority"]
            value = int(getattr(parameter, parameter.WhichOneof("parameter_choice") or "int64_param", 0) or 0)
        else:
            value = 0
        return settings.default_priority if value <= 0 else min(value, settings.priority_levels)

    async def prepare_infer(
        self,
        request: service_pb2.ModelInferRequest,
        payload: bytes,
        metadata: Mapping[str, str],
        timeout: float | None,
        tensors: Sequence[Tensor] | None = None,
    ) -> Prepared:
        """Route and validate the request; what to send upstream and where. `tensors`: the raw
        inputs when they were kept out of `request`; by default, the request's own."""
        if tensors is None:
            tensors = list(request.raw_input_contents)
        with child_span("route"):
            route = await self.route(request.model_name, timeout)
            decision = self.router.decide(route, metadata, request.model_version)
        variant = decision.primary
        record = current()
        if record is not None:
            record.model, record.variant, record.pool = route.model, variant.name, variant.pool
        with child_span("validate"):
            signature = await self.signatures.get(variant, timeout)
            validate_infer_request(request, signature, tensors)
        return Prepared(payload, self.pools[variant.pool], route, decision, request, signature, tensors)

    async def model_rpc(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        response = await self._model_rpc(method, payload, timeout)
        if self.cache is None:
            return response
        if method == "ModelStatistics":
            return self.cache.fold_into_statistics(response)
        if method == "ModelConfig":
            return self.cache.show_in_config(response, parse(service_pb2.ModelConfigRequest, payload).name)
        return response

    async def _model_rpc(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        scoped = MODEL_SCOPED[method]
        request = parse(scoped.request, payload)
        public = getattr(request, scoped.name_field)
        if not public:  # statistics or trace settings for every model: ask every pool
            return await self.fan_out(method, payload, timeout)
        version = getattr(request, scoped.version_field) if scoped.version_field else ""
        route = await self.route(public, timeout)
        variant = self.router.decide(route, {}, version).primary if version else heaviest(route)
        pool = self.pools[variant.pool]
        if variant.model == public:
            return await pool.call(method, payload, timeout)
        setattr(request, scoped.name_field, variant.model)
        return _rename(await pool.call(method, request.SerializeToString(), timeout), method, public)

    def pools_in_use(self) -> list[Pool]:
        return list(self.pools.values())

    async def first_pool(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        return await self.pools_in_use()[0].call(method, payload, timeout)

    async def fan_out(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """Send to every pool; merge repeated fields of the answers (first pool wins on scalars)."""
        answers = await asyncio.gather(*(pool.call(method, payload, timeout) for pool in self.pools_in_use()))
        if len(answers) == 1:
            return answers[0]
        merged = b"".join(reversed(answers))  # protobuf: concatenation merges, last scalar wins
        return _dedupe(method, merged)


def heaviest(route: Route) -> Variant:
    return max(route.variants, key=lambda v: v.weight)


# Server-wide answers merged across pools: which repeated field lists models, to keep each once.
_MERGED_LISTS: dict[str, tuple[type[Message], str]] = {
    "RepositoryIndex": (service_pb2.RepositoryIndexResponse, "models"),
    "ModelStatistics": (service_pb2.ModelStatisticsResponse, "model_stats"),
}


def _dedupe(method: str, merged: bytes) -> bytes:
    if method not in _MERGED_LISTS:
        return merged
    message_type, field = _MERGED_LISTS[method]
    message = message_type.FromString(merged)
    entries = getattr(message, field)
    unique = {(entry.name, entry.version): entry for entry in entries}
    del entries[:]
    entries.extend(unique.values())
    return message.SerializeToString()
