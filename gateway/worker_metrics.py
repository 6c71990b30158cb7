"""The supervisor's /metrics: every worker's exposition, merged, each series labelled `worker`.

Workers keep their own registries (stats objects cannot live in shared memory); the supervisor
reads each worker's private endpoint when it is scraped, so a counter summed over `worker` is the
exact total, and gauges stay per worker (`gateway_worker_up` says which answered)."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["SupervisorMetrics", "WorkersCollector"]

log = logging.getLogger(__name__)


class WorkersCollector(Collector):
    def __init__(self, addresses: Callable[[], Mapping[int, str]], timeout_s: float = 2.0) -> None:
        self._addresses = addresses
        self._timeout_s = timeout_s

    def _scrape(self, address: str) -> str | None:
        try:
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=self._timeout_s) as response:
                text: str = response.read().decode()
                return text
        except OSError as exc:
            log.warning("worker metrics at %s unavailable: %s", address, exc)
            return None

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        up = GaugeMetricFamily("gateway_worker_up", "1 when the worker answered this scrape", labels=["worker"])
        for index, address in sorted(self._addresses().items()):
            text = self._scrape(address)
            up.add_metric([str(index)], float(text is not None))
            for family in text_string_to_metric_families(text or ""):
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(index)}
                    into.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
        yield from merged.values()
        yield up


class SupervisorMetrics:
    """The supervisor's registry: its workers' series and its own."""

    def __init__(self, addresses: Callable[[], Mapping[int, str]], running: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(WorkersCollector(addresses))
        alive = Gauge("gateway_workers", "Worker processes running", registry=self.registry)
        alive.set_function(running)  # counted when scraped
        self.restarts = Counter(
            "gateway_worker_restarts", "Workers restarted after exiting unexpectedly", registry=self.registry
        )
