"""Predictions and outcomes as Prometheus series, read from the feedback counters when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gateway.feedback.loop import Feedback
from gateway.feedback.quality import LAG_BUCKETS

__all__ = ["FeedbackCollector"]


class FeedbackCollector(Collector):
    def __init__(self, feedback: Feedback) -> None:
        self._feedback = feedback

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "variant"]
        counters = {
            "predictions": CounterMetricFamily("gateway_predictions", "Answers summarized for outcomes", labels=labels),
            "outcomes": CounterMetricFamily("gateway_outcomes", "Outcomes joined to predictions, by kind",
                                            labels=[*labels, "kind"]),
            "late": CounterMetricFamily("gateway_outcomes_late", "Outcomes observed past feedback.max_label_lag_s",
                                        labels=labels),
            "duplicate": CounterMetricFamily("gateway_outcomes_duplicate", "Second outcomes for one request (ignored)",
                                             labels=labels),
        }  # fmt: skip
        gauges = {
            "accuracy": GaugeMetricFamily("gateway_outcome_accuracy", "Accuracy against class labels", labels=labels),
            "mae": GaugeMetricFamily("gateway_outcome_mae", "Mean absolute error against numeric outcomes",
                                     labels=labels),
            "rmse": GaugeMetricFamily("gateway_outcome_rmse", "Root mean squared error", labels=labels),
            "mean_reward": GaugeMetricFamily("gateway_outcome_mean_reward", "Mean reward", labels=labels),
            "coverage": GaugeMetricFamily("gateway_outcome_coverage", "Share of predictions with an outcome",
                                          labels=labels),
            "mean_top": GaugeMetricFamily("gateway_prediction_confidence",
                                          "Mean probability of the predicted class (label-free)", labels=labels),
        }  # fmt: skip
        classes = CounterMetricFamily("gateway_predicted_classes", "Predictions by class", labels=[*labels, "class"])
        lag = HistogramMetricFamily("gateway_label_lag_seconds", "Prediction to outcome", labels=labels)
        for (model, variant), q in sorted(self._feedback.totals().items()):
            counters["predictions"].add_metric([model, variant], q.predictions)
            for kind, n in (("label", q.labelled), ("value", q.valued), ("reward", q.rewarded)):
                counters["outcomes"].add_metric([model, variant, kind], n)
            counters["late"].add_metric([model, variant], q.late)
            counters["duplicate"].add_metric([model, variant], q.duplicate)
            for name, gauge in gauges.items():
                value = getattr(q, name)
                if value is not None:
                    gauge.add_metric([model, variant], value)
            for cls, n in sorted(q.classes.items()):
                classes.add_metric([model, variant, str(cls)], n)
            cumulative, buckets = 0, []
            for bound, n in zip(LAG_BUCKETS, q.lag, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
            lag.add_metric([model, variant], buckets, sum_value=None)  # the lags are bucketed, not summed
        unmatched = CounterMetricFamily("gateway_outcomes_unmatched", "Outcomes for no known prediction")
        unmatched.add_metric([], self._feedback.store.unmatched)
        yield from (*counters.values(), *gauges.values(), classes, lag, unmatched)
