"""The response cache on the ModelInfer path: policy per route, tiers, single flight, `x-cache`.

Cached responses are stored without the caller's request id; each caller gets its own id back
(appended as a protobuf field, which overrides: no re-serialization on a hit).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import service_pb2

from batching import rows
from cache import (
    CACHE_CONTROL,
    Breaker,
    ByteLRU,
    CachePolicy,
    CacheStats,
    Directives,
    L2Key,
    ModelHits,
    Outcome,
    RedisTier,
    ResponseCache,
    SingleFlight,
    cache_key,
    fold_hits,
)
from gateway.config import GatewayConfig
from gateway.retarget import append_string_field
from gateway.route_policies import policies

if TYPE_CHECKING:
    from gateway.dataplane import Prepared

__all__ = ["InferenceCache", "policies"]

_RESPONSE_ID = 3  # ModelInferResponse.id
_SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


def with_id(response: bytes, request_id: str) -> bytes:
    if not request_id:
        return response
    return append_string_field(response, _RESPONSE_ID, request_id)


def without_id(response: bytes, request_id: str) -> bytes:
    if not request_id:  # Triton echoes the request's id, so there is none to remove
        return response
    message = service_pb2.ModelInferResponse.FromString(response)
    message.id = ""
    return message.SerializeToString()


class InferenceCache:
    def __init__(self, config: GatewayConfig, stats: CacheStats | None = None) -> None:
        settings = config.cache
        self.stats = stats or CacheStats()
        self.breaker = Breaker()
        l2 = None
        if settings.redis_url:
            timeout_s = settings.redis_timeout_ms / 1000
            l2 = RedisTier(
                settings.redis_url, timeout_s, settings.namespace, settings.compress, self.stats, self.breaker
            )
        self.tiers = ResponseCache(ByteLRU(settings.l1_max_bytes), l2, self.stats)
        self.flight: SingleFlight[tuple[bytes, str]] = SingleFlight()
        self.model_hits = ModelHits()
        self._ignored = frozenset(settings.ignored_parameters)
        self.default, self.per_route = policies(config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Routes' cache policies after a reload (tiers and Redis stay as started)."""
        self.default, self.per_route = policies(config)

    def policy(self, model: str) -> CachePolicy:
        return self.per_route.get(model, self.default)

    async def fetch(
        self, prepared: Prepared, metadata: Mapping[str, str], call: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, str]:
        """The response (from a tier, a shared call or a new one) and the `x-cache` outcome."""
        policy = self.policy(prepared.route.model)
        request = prepared.request
        cacheable = not prepared.signature.decoupled and not any(p in request.parameters for p in _SEQUENCE_PARAMETERS)
        if not policy.enabled or not cacheable:
            self.stats.bypassed += 1
            return await call(), Outcome.BYPASS
        directives = Directives.parse(metadata.get(CACHE_CONTROL))
        variant = prepared.decision.primary
        digest = cache_key(request, variant.model, variant.version, self._ignored, prepared.tensors)
        key: L2Key = (prepared.route.model, variant.name, digest)
        started = time.perf_counter_ns()
        if not directives.no_cache and (value := self.tiers.lookup_l1(key, policy)) is not None:
            self._hit(prepared, started)
            return with_id(value, request.id), Outcome.HIT_L1

        async def resolve() -> tuple[bytes, str]:
            """Redis, else Triton (storing the answer). Shared by identical concurrent requests:
            between the L1 miss above and joining the flight there is no await, so a request
            either finds the answer in L1 or joins the call that is producing it."""
            if not directives.no_cache and (hit := await self.tiers.lookup_l2(key, policy)) is not None:
                return hit
            self.stats.misses += 1
            response = without_id(await call(), request.id)
            if not directives.no_store:
                self.tiers.store(key, response, policy)
            return response, Outcome.MISS

        if directives.no_cache:  # the caller wants a fresh answer, not one already under way
            response, outcome = await resolve()
        else:
            (response, outcome), leader = await self.flight.run(key, resolve)
            if not leader:
                self.stats.coalesced += 1
        if outcome == Outcome.HIT_L2:
            self._hit(prepared, started)
        return with_id(response, request.id), outcome

    def snapshot(self) -> dict[str, Any]:
        """The admin API's CacheStats fields (as the core's `cache_stats` has them)."""
        stats, l1 = self.stats, self.tiers.l1
        return {
            "enabled_by_default": self.default.enabled, "redis_configured": self.tiers.l2 is not None,
            "redis_breaker": self.breaker.state, "hits_l1": stats.hits_l1, "hits_l2": stats.hits_l2,
            "misses": stats.misses, "bypassed": stats.bypassed, "stores": stats.stores, "too_large": stats.too_large,
            "coalesced": stats.coalesced, "l1_entries": len(l1) if l1 else 0, "l1_bytes": l1.bytes if l1 else 0,
            "l1_max_bytes": l1.max_bytes if l1 else 0, "evictions": l1.evictions if l1 else 0,
            "l2_errors": stats.l2_errors, "l2_skipped": stats.l2_skipped, "invalidated": stats.invalidated,
        }  # fmt: skip

    async def invalidate(self, model: str, variant: str) -> int:
        """Drop a model's (variant's) entries, or all when no model is named; RedisUnavailable
        when Redis could not be reached."""
        return await self.tiers.invalidate(model, variant)

    def _hit(self, prepared: Prepared, started_ns: int) -> None:
        """Counted for the model's statistics (ModelStatistics through the gateway)."""
        variant = prepared.decision.primary
        batched = prepared.signature.max_batch_size > 0
        inferences = (rows(prepared.request) or 1) if batched else 1  # Triton counts each row
        self.model_hits.record(variant.model, variant.version, inferences, time.perf_counter_ns() - started_ns)

    def show_in_config(self, response: bytes, route: str) -> bytes:
        """A ModelConfigResponse saying `response_cache { enable: true }` when the gateway caches
        the route, as Triton's would for a model with its own cache (clients such as perf_analyzer
        read it to report hits)."""
        if not self.policy(route).enabled:
            return response
        answer = service_pb2.ModelConfigResponse.FromString(response)
        if answer.config.response_cache.enable:
            return response
        answer.config.response_cache.enable = True
        return answer.SerializeToString()

    def fold_into_statistics(self, response: bytes) -> bytes:
        """A ModelStatisticsResponse with the cache's hits counted as Triton's own cache would."""
        hits = self.model_hits.snapshot()
        if not hits:
            return response
        statistics = service_pb2.ModelStatisticsResponse.FromString(response)
        return statistics.SerializeToString() if fold_hits(statistics, hits) else response

    async def close(self) -> None:
        await self.tiers.close()
