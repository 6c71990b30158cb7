"""Between the router's values and the admin API's messages (gateway_admin.admin_pb2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.admission import Admission
from gateway.shadow_stats import ABS_ERROR_BUCKETS, ShadowCounters
from gateway.upstream import Pool
from gateway_admin import admin_pb2 as pb
from router import MatchOp, MatchRule, Route, RouteEvent, ShadowPolicy, Variant

__all__ = [
    "cache_stats_to_proto",
    "event_to_proto",
    "pool_stats_to_proto",
    "route_from_proto",
    "route_to_proto",
    "stats_to_proto",
]

_OPS = {MatchOp.EQUALS: pb.MatchRule.EQUALS, MatchOp.ONE_OF: pb.MatchRule.ONE_OF, MatchOp.PREFIX: pb.MatchRule.PREFIX}
_OPS_BACK = {value: key for key, value in _OPS.items()}
DEFAULT_MAX_INFLIGHT = ShadowPolicy("").max_inflight


def route_to_proto(route: Route) -> pb.Route:
    return pb.Route(
        model=route.model,
        variants=[pb.Variant(name=v.name, pool=v.pool, model=v.model, version=v.version, weight=v.weight)
                  for v in route.variants],
        rules=[pb.MatchRule(header=r.header, op=_OPS[r.op], values=r.values, variant=r.variant) for r in route.rules],
        sticky_header=route.sticky_header or "",
        shadows=[pb.ShadowPolicy(variant=s.variant, fraction=s.fraction, max_inflight=s.max_inflight)
                 for s in route.shadows],
        discovered=route.discovered,
    )  # fmt: skip


def shadow_from_proto(shadow: pb.ShadowPolicy) -> ShadowPolicy:
    return ShadowPolicy(shadow.variant, shadow.fraction, shadow.max_inflight or DEFAULT_MAX_INFLIGHT)


def route_from_proto(route: pb.Route) -> Route:
    return Route(
        model=route.model,
        variants=tuple(Variant(v.name, v.pool, v.model or route.model, v.version, v.weight) for v in route.variants),
        rules=tuple(MatchRule(r.header, _OPS_BACK[r.op], tuple(r.values), r.variant) for r in route.rules),
        sticky_header=route.sticky_header or None,
        shadows=tuple(shadow_from_proto(s) for s in route.shadows),
    )


def stats_to_proto(model: str, primary: str, shadow: str, counters: ShadowCounters) -> pb.ShadowStats:
    return pb.ShadowStats(
        model=model,
        primary=primary,
        variant=shadow,
        sent=counters.sent,
        dropped=counters.dropped,
        failed=counters.failed,
        compared=counters.compared,
        exact_matches=counters.exact_matches,
        argmax_compared=counters.argmax_compared,
        argmax_disagreements=counters.argmax_disagreements,
        max_abs_error=counters.max_abs_error,
        max_rel_error=counters.max_rel_error,
        abs_error_histogram={
            str(bound): count for bound, count in zip(ABS_ERROR_BUCKETS, counters.abs_error_buckets, strict=True)
        },
    )


def cache_stats_to_proto(stats: Mapping[str, Any]) -> pb.CacheStats:
    """`stats`: a cache's snapshot (either engine's), field for field."""
    return pb.CacheStats(**stats)


def pool_stats_to_proto(pool: Pool, admission: Admission | None, now: float) -> pb.PoolStats:
    stats = pool.stats
    endpoints = [
        pb.EndpointStats(
            address=e.address,
            ready=e.health.ready,
            ejected=e.health.ejected(),
            ejected_for_s=max(e.health.ejected_until - now, 0.0),
            outstanding=e.load.outstanding,
            latency_ewma_ms=e.load.latency_ewma_s * 1000,
            ejections=e.health.total_ejections,
            unready_models=sorted(f"{model}:{version}" for model, version in e.unready_models),
        )
        for e in pool.endpoints
    ]
    policy = admission.policy if admission else None
    waits = stats.queue_wait_us
    return pb.PoolStats(
        name=pool.name,
        limit=policy.limit if policy else 0,
        in_flight=policy.in_flight if policy else sum(e.load.outstanding for e in pool.endpoints),
        queued=policy.queued if policy else 0,
        max_queue=policy.max_queue if policy else 0,
        attempts=stats.attempts,
        retries=stats.retries,
        retries_denied=stats.retries_denied,
        hedges=stats.hedges,
        ejections=stats.ejections,
        admitted=stats.admitted,
        admitted_after_queueing=stats.queued,
        shed=stats.shed,
        expired=stats.expired,
        cancelled=stats.cancelled,
        queue_wait_p50_ms=waits.get_value_at_percentile(50) / 1000 if waits.get_total_count() else 0.0,
        queue_wait_p99_ms=waits.get_value_at_percentile(99) / 1000 if waits.get_total_count() else 0.0,
        endpoints=endpoints,
    )


def event_to_proto(event: RouteEvent) -> pb.RouteEvent:
    return pb.RouteEvent(revision=event.revision, kind=event.kind, model=event.model, route=route_to_proto(event.route))
