"""Prometheus series of the gateway, read from the core's stats snapshot when scraped.

The core counts, this only formats, at scrape time (never the global registry: it is injected).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from gateway.rollout.shadow_stats import ABS_ERROR_BUCKETS, ShadowStats
from gateway.serving.cache_admin import cache_series

__all__ = ["BATCH_SIZE_BUCKETS", "CoreCollector", "batch_series", "shadow_series", "stream_series"]

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, float("inf"))


Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily

_POOL_COUNTERS = {
    "attempts": "Upstream calls, retries included",
    "retries": "Retries on another endpoint",
    "retries_denied": "Retries the retry budget refused",
    "ejections": "Outlier ejections",
    "hedges": "Second attempts sent because the first was slow (hedging)",
    "shed": "Requests shed with RESOURCE_EXHAUSTED (queue full)",
    "expired": "Requests answered DEADLINE_EXCEEDED before reaching Triton",
    "cancelled": "Callers that left the queue",
}


def _histogram(name: str, text: str, labels: list[str], rows: list[dict[str, Any]], bounds: list[float]) -> Family:
    family = HistogramMetricFamily(name, text, labels=labels)
    for row in rows:
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, row["buckets"], strict=True):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", row["count"]))
        family.add_metric([row[label] for label in labels], buckets, sum_value=row["sum"])
    return family


class CoreCollector(Collector):
    """`stats`: the core's `Core.stats` (a JSON snapshot); `shadows`: its shadow counters."""

    def __init__(self, stats: Callable[[], str], shadows: ShadowStats) -> None:
        self._stats = stats
        self._shadows = shadows

    def collect(self) -> Iterator[Family]:
        snapshot = json.loads(self._stats())
        series, bounds = snapshot["series"], snapshot["series"]["bounds"]
        requests = CounterMetricFamily(
            "gateway_requests",
            "RPCs answered, by method, model, variant and gRPC code",
            labels=["method", "model", "variant", "code"],
        )
        for row in series["requests"]:
            requests.add_metric([row["method"], row["model"], row["variant"], row["code"]], row["count"])
        yield requests
        yield _histogram(
            "gateway_request_duration_seconds",
            "Time from receiving an RPC to answering it, by the variant that served it",
            ["method", "model", "variant"],
            series["durations"],
            bounds,
        )
        yield _histogram(
            "gateway_upstream_duration_seconds",
            "Time spent in upstream calls of an RPC (retries included), by variant",
            ["pool", "model", "variant"],
            series["upstream"],
            bounds,
        )
        yield from stream_series(series["streams"], bounds, series["answer_bounds"])
        yield from self._pools(snapshot["pools"], bounds)
        lookups = CounterMetricFamily(
            "gateway_cache_lookups",
            "Cache outcomes of ModelInfer, by model and result (hit-l1, hit-l2, miss, bypass)",
            labels=["model", "result"],
        )
        for row in series["cache"]:
            lookups.add_metric([row["model"], row["result"]], row["count"])
        yield lookups
        yield from cache_series(snapshot["cache"])
        yield from batch_series(snapshot["batching"])
        yield from shadow_series(self._shadows)
        dropped = CounterMetricFamily(
            "gateway_core_dropped", "Records the core dropped because a bounded queue was full", labels=["queue"]
        )
        dropped.add_metric(["access_log"], series["access_log_dropped"])
        dropped.add_metric(["observations"], snapshot["observations_dropped"])
        dropped.add_metric(["events"], snapshot["events_dropped"])
        yield dropped
        connections = CounterMetricFamily(
            "gateway_connections_accepted", "Client connections accepted on the data port"
        )
        connections.add_metric([], snapshot["connections_accepted"])
        yield connections
        threads = GaugeMetricFamily("gateway_core_threads", "Threads of the core serving the data port (--workers)")
        threads.add_metric([], snapshot["threads"])
        yield threads

    @staticmethod
    def _pools(pools: list[dict[str, Any]], bounds: list[float]) -> Iterator[Family]:
        counters = {
            name: CounterMetricFamily(f"gateway_pool_{name}", text, labels=["pool"])
            for name, text in _POOL_COUNTERS.items()
        }
        in_flight = GaugeMetricFamily("gateway_pool_in_flight", "Requests under way towards the pool", labels=["pool"])
        depth = GaugeMetricFamily("gateway_queue_depth", "Requests waiting in the admission queue", labels=["pool"])
        limit = GaugeMetricFamily("gateway_pool_limit", "Concurrency limit (0: none)", labels=["pool"])
        waits = [
            {"pool": pool["name"]} | pool["queue_wait"] for pool in pools if pool.get("queue_wait", {}).get("count")
        ]
        ready = GaugeMetricFamily(
            "gateway_upstream_ready", "1 when the endpoint's last probe said ready", labels=["pool", "endpoint"]
        )
        ejected = GaugeMetricFamily(
            "gateway_upstream_ejected", "1 while outlier detection has the endpoint out", labels=["pool", "endpoint"]
        )
        endpoints = GaugeMetricFamily("gateway_pool_endpoints", "Endpoints in the pool (DNS names counted by address)",
                                      labels=["pool"])  # fmt: skip
        resolutions = CounterMetricFamily("gateway_dns_resolutions", "Resolutions of a pool's dns: endpoint",
                                          labels=["pool", "name"])  # fmt: skip
        failures = CounterMetricFamily("gateway_dns_failures", "Failed resolutions of a dns: endpoint (last set kept)",
                                       labels=["pool", "name"])  # fmt: skip
        addresses = GaugeMetricFamily("gateway_dns_addresses", "Addresses a dns: endpoint resolves to",
                                      labels=["pool", "name"])  # fmt: skip
        for pool in pools:
            endpoints.add_metric([pool["name"]], len(pool["endpoints"]))
            for name in pool.get("names", []):
                resolutions.add_metric([pool["name"], name["name"]], name["resolutions"])
                failures.add_metric([pool["name"], name["name"]], name["failures"])
                addresses.add_metric([pool["name"], name["name"]], len(name["addresses"]))
            for name, family in counters.items():
                family.add_metric([pool["name"]], pool.get(name, 0))
            in_flight.add_metric([pool["name"]], pool["in_flight"])
            depth.add_metric([pool["name"]], pool.get("queued", 0))
            limit.add_metric([pool["name"]], pool.get("limit", 0))
            for endpoint in pool["endpoints"]:
                ready.add_metric([pool["name"], endpoint["address"]], float(endpoint["ready"]))
                ejected.add_metric([pool["name"], endpoint["address"]], float(endpoint["ejected"]))
        yield from counters.values()
        yield from (in_flight, depth, limit, ready, ejected, endpoints, resolutions, failures, addresses)
        yield _histogram(
            "gateway_queue_wait_seconds", "Time a request waited in its pool's admission queue", ["pool"], waits, bounds
        )
        yield from queue_series(pools, bounds)


def stream_series(rows: list[dict[str, Any]], bounds: list[float], answer_bounds: list[float]) -> Iterator[Family]:
    """Generative traffic: each streamed request's time to its first answer, the gaps between its
    answers, its answers, and how it ended (done, failed, cancelled by its caller, broken)."""
    labels = ["model", "variant"]
    yield _histogram("gateway_stream_first_response_seconds",
                     "Time from sending a streamed request upstream to its first answer, by variant", labels,
                     [{"model": r["model"], "variant": r["variant"]} | r["first_response"] for r in rows
                      if r["first_response"]["count"]], bounds)  # fmt: skip
    yield _histogram("gateway_stream_response_gap_seconds", "Time between two answers of a streamed request",
                     labels, [{"model": r["model"], "variant": r["variant"]} | r["gaps"] for r in rows
                              if r["gaps"]["count"]], bounds)  # fmt: skip
    answered = [{"model": r["model"], "variant": r["variant"], "buckets": r["answers"], "sum": r["answers_sum"],
                 "count": sum(r["ended"].values())} for r in rows if r["answers"]]  # fmt: skip
    yield _histogram("gateway_stream_responses_per_request", "Answers a streamed request had", labels, answered,
                     answer_bounds)  # fmt: skip
    ended = CounterMetricFamily("gateway_stream_requests", "Streamed requests by how they ended (done, failed, "
                                "cancelled by their caller, broken)", labels=[*labels, "ended"])  # fmt: skip
    for row in rows:
        for ending, count in row["ended"].items():
            ended.add_metric([row["model"], row["variant"], ending], count)
    yield ended


def queue_series(pools: list[dict[str, Any]], bounds: list[float]) -> Iterator[Family]:
    """The admission queue by tenant and by priority class: queued and under way now, admitted,
    shed by reason, expired, and the time waited."""
    for part, label in (("tenant", "tenant"), ("priority", "priority")):
        prefix = f"gateway_{part}"
        labels = ["pool", label]
        depth = GaugeMetricFamily(f"{prefix}_queue_depth", f"Requests waiting in the admission queue, by {part}",
                                  labels=labels)  # fmt: skip
        admitted = CounterMetricFamily(f"{prefix}_admitted", f"Requests given a slot of the pool, by {part}",
                                       labels=labels)  # fmt: skip
        shed = CounterMetricFamily(f"{prefix}_shed", f"Requests shed with RESOURCE_EXHAUSTED, by {part} and reason",
                                   labels=[*labels, "reason"])  # fmt: skip
        expired = CounterMetricFamily(f"{prefix}_expired", f"Requests that could not be served in time, by {part}",
                                      labels=labels)  # fmt: skip
        in_flight = GaugeMetricFamily(f"{prefix}_in_flight", f"Requests under way towards the pool, by {part}",
                                      labels=labels)  # fmt: skip
        waits = []
        for pool in pools:
            for share in pool.get("tenants" if part == "tenant" else "classes", []):
                key = [pool["name"], str(share[label])]
                depth.add_metric(key, share["queued"])
                admitted.add_metric(key, share["admitted"])
                expired.add_metric(key, share["expired"])
                for reason, count in share["shed_by_reason"].items():
                    shed.add_metric([*key, reason], count)
                if part == "tenant":
                    in_flight.add_metric(key, share["in_flight"])
                if share["queue_wait"].get("count"):
                    waits.append({"pool": key[0], label: key[1]} | share["queue_wait"])
        yield from (depth, admitted, shed, expired)
        if part == "tenant":
            yield in_flight
        yield _histogram(f"{prefix}_queue_wait_seconds", f"Time waited in the admission queue, by {part}", labels,
                         waits, bounds)  # fmt: skip


def batch_series(stats: Mapping[str, Any]) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
    """Micro-batching counters as Prometheus series (`sizes` maps callers per call
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
    """Shadow comparison counters as Prometheus series."""
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
