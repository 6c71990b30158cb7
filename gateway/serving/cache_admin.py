"""What the admin API and the metrics read of the core's response cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway._core import Core

__all__ = ["CacheAdmin", "CoreCache", "RedisUnavailable", "cache_series"]


class RedisUnavailable(Exception):
    """Redis could not be reached for an operator's call (invalidation); never on the request path."""


class CacheAdmin(Protocol):
    def snapshot(self) -> dict[str, Any]:
        """The admin API's CacheStats fields."""
        ...

    async def invalidate(self, model: str, variant: str) -> int:
        """Drop a model's (variant's) entries, or all when no model is named; the count dropped.
        RedisUnavailable when Redis could not be reached."""
        ...


class CoreCache:
    """The native core's cache."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def snapshot(self) -> dict[str, Any]:
        stats: dict[str, Any] = json.loads(self._core.cache_stats())
        return stats

    async def invalidate(self, model: str, variant: str) -> int:
        try:
            return await asyncio.to_thread(self._core.invalidate_cache, model, variant)
        except OSError as exc:
            raise RedisUnavailable(str(exc)) from exc


_COUNTERS = {
    "coalesced": ("coalesced", "Requests that shared another's upstream call"),
    "stores": ("stores", "Responses stored"),
    "redis_errors": ("l2_errors", "Redis calls that failed (never surfaced to callers)"),
    "redis_skipped": ("l2_skipped", "Redis calls skipped while the breaker was open"),
}


def cache_series(stats: Mapping[str, Any]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """A cache snapshot as Prometheus series (the lookups by outcome are counted per request)."""
    for name, (field, text) in _COUNTERS.items():
        family = CounterMetricFamily(f"gateway_cache_{name}", text)
        family.add_metric([], stats[field])
        yield family
    evictions = CounterMetricFamily("gateway_cache_l1_evictions", "Entries evicted from the in-process tier")
    evictions.add_metric([], stats["evictions"])
    size = GaugeMetricFamily("gateway_cache_l1_bytes", "Bytes held by the in-process tier")
    size.add_metric([], stats["l1_bytes"])
    breaker = GaugeMetricFamily("gateway_cache_redis_breaker_open", "1 while Redis is being skipped")
    breaker.add_metric([], float(stats["redis_breaker"] == "open"))
    yield from (evictions, size, breaker)
