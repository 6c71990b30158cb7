"""Between the router's values and the admin API's messages (gateway_admin.admin_pb2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.rollout.shadow_stats import ABS_ERROR_BUCKETS, ShadowCounters
from gateway.rollout.totals import Latencies
from gateway.routes import MatchOp, MatchRule, Route, RouteEvent, ShadowPolicy, Variant
from gateway_admin import admin_pb2 as pb

__all__ = [
    "cache_stats_to_proto",
    "event_to_proto",
    "route_from_proto",
    "route_to_proto",
    "stats_to_proto",
    "streams_to_proto",
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


def _mean_ms(total_s: float, count: int) -> float:
    return 1000 * total_s / count if count else 0.0


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
        mismatches=counters.mismatches,
        streams=counters.streams,
        first_k_agreements=counters.first_k_agreements,
        first_response_pairs=counters.first_response_pairs,
        primary_first_response_ms=_mean_ms(counters.primary_first_response_s, counters.first_response_pairs),
        shadow_first_response_ms=_mean_ms(counters.shadow_first_response_s, counters.first_response_pairs),
        abs_error_histogram={
            str(bound): count for bound, count in zip(ABS_ERROR_BUCKETS, counters.abs_error_buckets, strict=True)
        },
    )


def cache_stats_to_proto(stats: Mapping[str, Any]) -> pb.CacheStats:
    """`stats`: the core cache's snapshot, field for field."""
    return pb.CacheStats(**stats)


def event_to_proto(event: RouteEvent) -> pb.RouteEvent:
    return pb.RouteEvent(revision=event.revision, kind=event.kind, model=event.model, route=route_to_proto(event.route))


def streams_to_proto(rows: list[dict[str, Any]], model: str = "") -> list[pb.StreamStats]:
    """The core's stream series (its stats' `series.streams`) per model and variant."""
    stats = []
    for row in sorted(rows, key=lambda r: (r["model"], r["variant"])):
        if model and row["model"] != model:
            continue
        first, gaps = Latencies.of(row["first_response"]), Latencies.of(row["gaps"])
        stat = pb.StreamStats(model=row["model"], variant=row["variant"], requests=sum(row["ended"].values()),
                              responses=row["answers_sum"], **row["ended"])  # fmt: skip
        for name, latencies in (("first_response", first), ("gap", gaps)):
            for q in (50, 99):
                setattr(stat, f"{name}_p{q}_ms", 1000 * (latencies.quantile(q / 100) or 0.0))
        stats.append(stat)
    return stats
