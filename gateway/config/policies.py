"""Each route's cache and micro-batching policy: its own section over the top-level defaults (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.config.schema import BatchingConfig, CacheConfig, GatewayConfig, RouteBatchingConfig, RouteCacheConfig

__all__ = [
    "BatchSettings",
    "CachePolicy",
    "affinity_for_core",
    "batch_settings",
    "batching_for_core",
    "policies",
    "policies_for_core",
]


@dataclasses.dataclass(frozen=True, slots=True)
class CachePolicy:
    """A route's cache (crates/dataplane/src/cache/policy.rs `Policy`)."""

    enabled: bool = False
    ttl_s: float = 300.0
    max_entry_bytes: int = 1 << 20
    l1: bool = True
    l2: bool = True
    streams: bool = False  # streamed answers cached whatever the caller says


def _policy(defaults: CacheConfig, route: RouteCacheConfig | None, redis: bool) -> CachePolicy:
    tiers = (route.tiers if route and route.tiers is not None else None) or defaults.tiers
    return CachePolicy(
        enabled=route.enabled if route else defaults.enabled,
        ttl_s=(route.ttl_s if route and route.ttl_s else None) or defaults.ttl_s,
        max_entry_bytes=(route.max_entry_bytes if route and route.max_entry_bytes else None)
        or defaults.max_entry_bytes,
        l1="l1" in tiers,
        l2="l2" in tiers and redis,
        streams=bool(route and route.streams),
    )


def policies(config: GatewayConfig) -> tuple[CachePolicy, dict[str, CachePolicy]]:
    """The default policy and each configured route's own."""
    redis = config.cache.redis_url is not None
    default = _policy(config.cache, None, redis)
    return default, {model: _policy(config.cache, route.cache, redis) for model, route in config.routes.items()}


def policies_for_core(config: GatewayConfig) -> dict[str, Any]:
    """What `Core.set_cache_policies` takes (crates/dataplane/src/cache/policy.rs `Policies`)."""
    default, routes = policies(config)
    return {
        "default": dataclasses.asdict(default),
        "routes": {model: dataclasses.asdict(policy) for model, policy in routes.items()},
    }


@dataclasses.dataclass(frozen=True, slots=True)
class BatchSettings:
    max_batch_size: int  # rows per merged call
    max_inflight: int  # merged calls under way at once per model


def _batch_settings(defaults: BatchingConfig, route: RouteBatchingConfig | None) -> BatchSettings | None:
    if not (route.enabled if route else defaults.enabled):
        return None
    max_rows = (route.max_batch_size if route else None) or defaults.max_batch_size
    max_inflight = (route.max_inflight if route else None) or defaults.max_inflight
    return BatchSettings(max_rows, max_inflight)


def batch_settings(config: GatewayConfig) -> tuple[BatchSettings | None, dict[str, BatchSettings | None]]:
    """The default micro-batching and each configured route's own (None: not batched)."""
    default = _batch_settings(config.batching, None)
    return default, {model: _batch_settings(config.batching, route.batching) for model, route in config.routes.items()}


def batching_for_core(config: GatewayConfig) -> dict[str, Any]:
    """What `Core.set_batching_policies` takes (crates/dataplane/src/batching `BatchPolicies`)."""
    default, routes = batch_settings(config)

    def settings(value: BatchSettings | None) -> dict[str, int] | None:
        return dataclasses.asdict(value) if value is not None else None

    return {"default": settings(default), "routes": {model: settings(value) for model, value in routes.items()}}


def affinity_for_core(config: GatewayConfig) -> dict[str, Any]:
    """What `Core.set_affinity_policies` takes (crates/dataplane/src/route/affinity.rs): route -> policy."""
    return {model: route.affinity.model_dump() for model, route in config.routes.items() if route.affinity}
