"""Predictions joined with outcomes, the counters they make, and the quality gates (no sockets)."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.config.schema import parse_config
from gateway.feedback.loop import Feedback
from gateway.feedback.quality import Outcome, Prediction, QualityTotals, outcome_fields, prediction_fields
from gateway.feedback.store import MemoryFeedback, Reported
from gateway.rollout.gates import (
    ConfidenceGate,
    ConfidenceSettings,
    Evidence,
    OutcomesGate,
    OutcomesSettings,
    OutputDriftGate,
    OutputDriftSettings,
    Verdict,
    class_psi,
)
from gateway.rollout.totals import VariantTotals


def prediction(key: str, cls: int | None = 1, top: float | None = 0.9, value: float | None = None,
               time: float = 100.0, variant: str = "v") -> Prediction:  # fmt: skip
    return Prediction(key, "m", variant, "1", time, cls, top, value)


def test_outcomes_join_once_and_late_ones_are_only_counted() -> None:
    store = MemoryFeedback(max_records=10, ttl_s=1000, max_lag_s=60)
    asyncio.run(store.add([prediction("a"), prediction("b"), prediction("c", cls=2)]))
    outcomes = [Outcome("a", label=1), Outcome("x", label=1), Outcome("b", label=0, observed=1000.0),
                Outcome("c", label=1)]  # fmt: skip
    first = asyncio.run(store.report(outcomes, now=110.0))
    assert (first.accepted, first.unmatched, first.late, first.duplicate) == (2, 1, 1, 0)
    again = asyncio.run(store.report([Outcome("a", label=0)], now=120.0))
    assert again.duplicate == 1 and again.accepted == 0
    totals = store.totals()[("m", "v")]
    assert (totals.predictions, totals.labelled, totals.correct, totals.late, totals.duplicate) == (3, 2, 1, 1, 1)
    assert totals.accuracy == 0.5 and totals.classes == {1: 2, 2: 1} and store.unmatched == 1
    assert totals.mean_top == pytest.approx(0.9) and totals.lag[1] == 2  # 10 s: the "≤ 10 s" bucket


def test_predictions_are_bounded_by_count_and_age() -> None:
    store = MemoryFeedback(max_records=2, ttl_s=50, max_lag_s=1e9)
    asyncio.run(store.add([prediction("old", time=0.0), prediction("a", time=60.0), prediction("b", time=61.0),
                           prediction("c", time=62.0)]))  # fmt: skip
    reported = asyncio.run(store.report([Outcome(k, label=1) for k in ("old", "a", "b", "c")], now=63.0))
    assert (reported.accepted, reported.unmatched) == (2, 2)


def test_numeric_outcomes_and_rewards() -> None:
    fields = outcome_fields(prediction("a", cls=None, top=None, value=2.0), Outcome("a", value=3.5), 101.0, 60)
    fields |= {"predictions": 1}
    totals = QualityTotals.from_fields(fields)
    assert (totals.mae, totals.rmse, totals.labelled) == (1.5, 1.5, 0)
    rewarded = QualityTotals.from_fields(outcome_fields(prediction("a"), Outcome("a", reward=0.25), 101.0, 60))
    assert rewarded.mean_reward == 0.25


def test_windows_subtract_and_a_reset_is_the_whole() -> None:
    early = QualityTotals.from_fields(prediction_fields(prediction("a")))
    both = prediction_fields(prediction("a")) | {"predictions": 2, "top_sum": 1.7, "with_top": 2, "class:1": 2}
    late = QualityTotals.from_fields(both)
    window = late.minus(early)
    assert (window.predictions, window.classes) == (1, {1: 1}) and window.mean_top == pytest.approx(0.8)
    assert early.minus(late) is early


def quality(correct: int, labelled: int, classes: dict[int, int] | None = None, top: float = 0.9) -> QualityTotals:
    n = sum((classes or {0: labelled}).values())
    return QualityTotals(predictions=n, labelled=labelled, correct=correct, classes=classes or {0: labelled},
                         top_sum=top * n, with_top=n)  # fmt: skip


def evidence(candidate: QualityTotals, baseline: QualityTotals) -> Evidence:
    return Evidence(0, 1, VariantTotals(), VariantTotals(), candidate_quality=candidate, baseline_quality=baseline)


def test_the_outcome_gate_needs_labels_and_catches_a_real_drop() -> None:
    gate = OutcomesGate(OutcomesSettings(min_labels=100, tolerance=0.0))
    assert gate.evaluate(evidence(quality(50, 60), quality(500, 520))).verdict is Verdict.INCONCLUSIVE
    assert gate.evaluate(evidence(quality(272, 300), quality(288, 300))).verdict is Verdict.FAIL  # 90.7% vs 96%
    assert gate.evaluate(evidence(quality(287, 300), quality(288, 300))).verdict is Verdict.PASS


def test_the_confidence_and_output_drift_gates() -> None:
    confidence = ConfidenceGate(ConfidenceSettings(min_predictions=10, max_drop=0.05))
    assert confidence.evaluate(evidence(quality(0, 100, top=0.80), quality(0, 100, top=0.9))).verdict is Verdict.FAIL
    assert confidence.evaluate(evidence(quality(0, 100, top=0.88), quality(0, 100, top=0.9))).verdict is Verdict.PASS
    drift = OutputDriftGate(OutputDriftSettings(min_predictions=10, max_psi=0.25))
    same = {0: 50, 1: 50}
    assert drift.evaluate(evidence(quality(0, 0, same), quality(0, 0, same))).verdict is Verdict.PASS
    skewed = evidence(quality(0, 0, {0: 95, 1: 5}), quality(0, 0, same))
    assert drift.evaluate(skewed).verdict is Verdict.FAIL
    assert class_psi({0: 1}, {1: 1}) > 10 and math.isclose(class_psi(same, same), 0.0)


def _feedback(hold_s: float) -> Feedback:
    config = parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}}, "feedback": {"enabled": True,
                           "hold_s": hold_s}})  # fmt: skip
    return Feedback(config, clock=lambda: 100.0)


def test_an_outcome_that_overtakes_its_prediction_is_held_and_joined_when_it_comes() -> None:
    async def run() -> tuple[Reported, int]:
        feedback = _feedback(hold_s=1.0)
        reporting = asyncio.create_task(feedback.report([Outcome("early", label=1), Outcome("never", label=1)]))
        await asyncio.sleep(0.2)  # the prediction comes after its outcome
        await feedback.store.add([prediction("early")])
        return await reporting, feedback.store.unmatched

    reported, unmatched = asyncio.run(run())
    assert (reported.accepted, reported.unmatched, unmatched) == (1, 1, 1)  # "never" counted once, at the end


def test_without_a_hold_an_early_outcome_is_unmatched_at_once() -> None:
    feedback = _feedback(hold_s=0.0)
    reported = asyncio.run(feedback.report([Outcome("early", label=1)]))
    assert (reported.accepted, reported.unmatched, feedback.store.unmatched) == (0, 1, 1)
