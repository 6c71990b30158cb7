"""Rollouts as Prometheus series, read from the controller when scraped (Flagger's and Argo's
users alert on these: phase, weights, the step, failed windows)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.rollout.controller import RolloutController
from gateway.rollout.phases import Phase

__all__ = ["RolloutCollector"]


class RolloutCollector(Collector):
    def __init__(self, controller: RolloutController) -> None:
        self._controller = controller

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phase = GaugeMetricFamily("gateway_rollout_phase", "1 for the phase each model's rollout is in",
                                  labels=["model", "phase"])  # fmt: skip
        weight = GaugeMetricFamily("gateway_rollout_weight", "Weights the rollout set", labels=["model", "variant"])
        step = GaugeMetricFamily("gateway_rollout_step", "Canary step (1-based; 0 before the first)", labels=["model"])
        failures = GaugeMetricFamily("gateway_rollout_failures", "Failed windows of the rollout", labels=["model"])
        for state in self._controller.list():
            model = state.spec.model
            for candidate in Phase:
                phase.add_metric([model, candidate.value], 1.0 if state.phase is candidate else 0.0)
            for variant, value in state.weights.items():
                weight.add_metric([model, variant], value)
            step.add_metric([model], state.step + 1)
            failures.add_metric([model], state.failures)
        leading = GaugeMetricFamily("gateway_rollout_leader", "1 when this gateway advances rollouts")
        leading.add_metric([], 1.0 if self._controller.leading else 0.0)
        yield from (phase, weight, step, failures, leading)
