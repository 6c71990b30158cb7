"""Prometheus metrics. The registry is injected (never the global one): tests and workers stay apart.

Per-request series are recorded as requests finish; everything the stats objects already count
(pools, cache, shadows) is read from them at scrape time by one collector, on the event loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from gateway.cache_admin import cache_series
from gateway.shadow_stats import ABS_ERROR_BUCKETS, ShadowStats

if TYPE_CHECKING:
    from gateway.admission import Admission
    from gateway.batcher import BatchStats
    from gateway.caching import InferenceCache
    from gateway.upstream import Pool

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, float("inf"))

__all__ = ["BATCH_SIZE_BUCKETS", "LATENCY_BUCKETS", "GatewayMetrics", "Labelled", "StatsCollector", "shadow_series"]

# 100 µs to 10 s.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A metric's child per label values, looked up once: `labels()` validates, rebuilds its key
    and takes a lock on every call, which the request path pays per RPC."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Labelled(Counter(
            "gateway_requests", "RPCs answered, by method, model, variant and gRPC code",
            ["method", "model", "variant", "code"], registry=registry,
        ))  # fmt: skip
        self.duration = Labelled(Histogram(
            "gateway_request_duration_seconds", "Time from receiving an RPC to answering it",
            ["method", "model"], buckets=LATENCY_BUCKETS, registry=registry,
        ))  # fmt: skip
        self.upstream = Labelled(Histogram(
            "gateway_upstream_duration_seconds", "Time spent in upstream calls of an RPC (retries included)",
            ["pool", "model"], buckets=LATENCY_BUCKETS, registry=registry,
        ))  # fmt: skip
        self.queue_wait = Labelled(Histogram(
            "gateway_queue_wait_seconds", "Time a request waited in its pool's admission queue",
            ["pool"], buckets=LATENCY_BUCKETS, registry=registry,
        ))  # fmt: skip
        self.cache = Labelled(Counter(
            "gateway_cache_lookups", "Cache outcomes of ModelInfer, by model and result (hit-l1, hit-l2, miss, bypass)",
            ["model", "result"], registry=registry,
        ))  # fmt: skip


class StatsCollector(Collector):
    """Pools, cache and shadow counters as Prometheus series, read when scraped."""

    def __init__(
        self,
        pools: Mapping[str, Pool],
        admissions: Callable[[], Mapping[str, Admission]],
        cache: InferenceCache,
        shadows: ShadowStats,
        batches: BatchStats,
    ) -> None:
        self._pools = pools
        self._batches = batches
        self._admissions = admissions
        self._cache = cache
        self._shadows = shadows

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        yield from self._pool_series()
        yield from cache_series(self._cache.snapshot())
        yield from shadow_series(self._shadows)
        yield from batch_series(dataclasses.asdict(self._batches))

    def _pool_series(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = {
            "attempts": "Upstream calls, retries included", "retries": "Retries on another endpoint",
            "retries_denied": "Retries the retry budget refused", "ejections": "Outlier ejections",
            "hedges": "Second attempts sent because the first was slow (hedging)",
            "shed": "Requests shed with RESOURCE_EXHAUSTED (queue full)",
            "expired": "Requests answered DEADLINE_EXCEEDED before reaching Triton",
            "cancelled": "Callers that left the queue",
        }  # fmt: skip
        families = {
            name: CounterMetricFamily(f"gateway_pool_{name}", text, labels=["pool"]) for name, text in counters.items()
        }
        depth = GaugeMetricFamily("gateway_queue_depth", "Requests waiting in the admission queue", labels=["pool"])
        in_flight = GaugeMetricFamily("gateway_pool_in_flight", "Requests under way towards the pool", labels=["pool"])
        limit = GaugeMetricFamily("gateway_pool_limit", "Concurrency limit (0: none)", labels=["pool"])
        ready = GaugeMetricFamily(
            "gateway_upstream_ready", "1 when the endpoint's last probe said ready", labels=["pool", "endpoint"]
        )
        ejected = GaugeMetricFamily(
            "gateway_upstream_ejected", "1 while outlier detection has the endpoint out", labels=["pool", "endpoint"]
        )
        admissions = self._admissions()
        for name, pool in self._pools.items():
            for key, family in families.items():
                family.add_metric([name], getattr(pool.stats, key))
            policy = admissions[name].policy if name in admissions else None
            depth.add_metric([name], policy.queued if policy else 0)
            in_flight.add_metric(
                [name], policy.in_flight if policy else sum(e.load.outstanding for e in pool.endpoints)
            )
            limit.add_metric([name], policy.limit if policy else 0)
            for endpoint in pool.endpoints:
                ready.add_metric([name, endpoint.address], float(endpoint.health.ready))
                ejected.add_metric([name, endpoint.address], float(endpoint.health.ejected()))
        yield from families.values()
        yield from (depth, in_flight, limit, ready, ejected)


def batch_series(stats: Mapping[str, Any]) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    """Micro-batching counters as Prometheus series (either engine's: `sizes` maps callers per call
    to calls, as a dict or as pairs)."""
    for name, text in (
        ("calls", "Upstream calls made by micro-batching"),
        ("merged_calls", "Of those, calls that carried several requests"),
        ("requests", "Requests served through micro-batching"),
        ("expired", "Requests whose deadline passed while they waited for a batch"),
    ):
        family = CounterMetricFamily(f"gateway_batch_{name}", text)
        family.add_metric([], stats[name])
        yield family
    sizes = dict(stats["sizes"])
    histogram = HistogramMetricFamily("gateway_batch_size", "Requests per upstream call made by micro-batching")
    buckets = []
    for bound in BATCH_SIZE_BUCKETS:
        cumulative = sum(count for size, count in sizes.items() if size <= bound)
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    histogram.add_metric([], buckets, sum_value=sum(size * count for size, count in sizes.items()))
    yield histogram


def shadow_series(shadows: ShadowStats) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    """Shadow comparison counters as Prometheus series (either engine's ShadowStats)."""
    labels = ["model", "primary", "shadow"]
    copies = CounterMetricFamily("gateway_shadow_copies", "Shadow copies by outcome", labels=[*labels, "outcome"])
    exact = CounterMetricFamily(
        "gateway_shadow_exact_matches", "Comparisons with byte-identical outputs", labels=labels
    )
    compared = CounterMetricFamily("gateway_shadow_argmax_compared", "Comparisons with class scores", labels=labels)
    disagreements = CounterMetricFamily(
        "gateway_shadow_argmax_disagreements", "Comparisons whose argmax differed", labels=labels
    )
    errors = HistogramMetricFamily(
        "gateway_shadow_max_abs_error", "Max absolute output error per comparison", labels=labels
    )
    for key, c in shadows.snapshot().items():
        for outcome in ("sent", "dropped", "failed", "compared"):
            copies.add_metric([*key, outcome], getattr(c, outcome))
        exact.add_metric(list(key), c.exact_matches)
        compared.add_metric(list(key), c.argmax_compared)
        disagreements.add_metric(list(key), c.argmax_disagreements)
        cumulative, buckets = 0, []
        for bound, count in zip(ABS_ERROR_BUCKETS, c.abs_error_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        errors.add_metric(list(key), buckets, sum_value=None)  # errors are bucketed, not summed
    yield from (copies, exact, compared, disagreements, errors)
