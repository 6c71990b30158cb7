"""Drift as Prometheus series, read from the monitor when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.drift.loop import Drift

__all__ = ["DriftCollector"]


class DriftCollector(Collector):
    def __init__(self, drift: Drift) -> None:
        self._drift = drift

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "variant"]
        psi = GaugeMetricFamily("gateway_drift_psi", "PSI of each feature in the last window against the reference",
                                labels=[*labels, "feature"])  # fmt: skip
        share = GaugeMetricFamily("gateway_drift_drifted_share", "Share of features drifted in the last window",
                                  labels=labels)  # fmt: skip
        consecutive = GaugeMetricFamily("gateway_drift_consecutive", "Drifted windows in a row", labels=labels)
        windows = CounterMetricFamily("gateway_drift_windows", "Windows compared with the reference", labels=labels)
        for (model, variant), state in sorted(self._drift.views().items()):
            windows.add_metric([model, variant], state.windows)
            if state.last is None:
                continue
            share.add_metric([model, variant], state.last.drifted_share)
            consecutive.add_metric([model, variant], state.consecutive)
            for feature in state.last.features:
                psi.add_metric([model, variant, feature.feature], feature.psi)
        sampled = CounterMetricFamily("gateway_drift_samples", "Sampled requests whose features were read")
        sampled.add_metric([], self._drift.sampled)
        alerts = CounterMetricFamily("gateway_drift_alerts", "Windows that closed in alert")
        alerts.add_metric([], self._drift.alerts)
        yield from (psi, share, consecutive, windows, sampled, alerts)
