"""Each route's cache policy: its own `cache` section over the top-level defaults (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from cache import CachePolicy
from gateway.config import CacheConfig, GatewayConfig, RouteCacheConfig

__all__ = ["policies", "policies_for_core"]


def _policy(defaults: CacheConfig, route: RouteCacheConfig | None, redis: bool) -> CachePolicy:
    tiers = (route.tiers if route and route.tiers is not None else None) or defaults.tiers
    return CachePolicy(
        enabled=route.enabled if route else defaults.enabled,
        ttl_s=(route.ttl_s if route and route.ttl_s else None) or defaults.ttl_s,
        max_entry_bytes=(route.max_entry_bytes if route and route.max_entry_bytes else None)
        or defaults.max_entry_bytes,
        l1="l1" in tiers,
        l2="l2" in tiers and redis,
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
