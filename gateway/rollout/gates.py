"""Gates: each compares the candidate with the baseline over one window and says pass, fail or
inconclusive, with the numbers it decided on. Pure: evidence in, a verdict out.

Defaults follow the issue tracker complaints about Flagger and Argo Rollouts: errors are gRPC
statuses that mean the variant failed (not HTTP 5xx, not the caller's mistakes, not shedding);
latency is judged against the baseline in the same window, not against a fixed number (and so,
for the streamed requests of generative models, are the time to the first answer and the gap
between answers: what their users feel); a shadow phase is judged on what the candidate
answers. Other gates (model quality) implement `Gate` and join the list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from gateway.feedback.quality import QualityTotals
from gateway.rollout.shadow_stats import ABS_ERROR_BUCKETS, SUMMED, ShadowCounters
from gateway.rollout.totals import Latencies, VariantTotals

__all__ = [
    "Evidence",
    "Gate",
    "GateResult",
    "GateSettings",
    "Verdict",
    "class_psi",
    "gates_for",
    "one_sided_p_value",
    "shadow_delta",
]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    verdict: Verdict
    values: Mapping[str, float] = field(default_factory=dict)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "verdict": self.verdict.value, "values": dict(self.values), "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        return cls(data["gate"], Verdict(data["verdict"]), dict(data.get("values", {})), data.get("detail", ""))


@dataclass(frozen=True, slots=True)
class Evidence:
    """One window: what each variant answered in it, and the shadow copies compared in it."""

    since: float
    until: float
    candidate: VariantTotals
    baseline: VariantTotals
    shadow: ShadowCounters = field(default_factory=ShadowCounters)
    # Predictions and joined outcomes in the window (feedback on), per variant.
    candidate_quality: QualityTotals = field(default_factory=QualityTotals)
    baseline_quality: QualityTotals = field(default_factory=QualityTotals)


class Gate(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def shadow_phase(self) -> bool: ...  # judged in the shadow phase (else in canary steps)

    def evaluate(self, evidence: Evidence) -> GateResult: ...


class ErrorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    alpha: float = Field(default=0.05, gt=0, lt=1)
    tolerance: float = Field(default=0.005, ge=0, le=1)  # 0.5 points of failure rate


class LatencySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    quantile: float = Field(default=0.99, gt=0, lt=1)
    factor: float = Field(default=1.2, ge=1)
    offset_ms: float = Field(default=10.0, ge=0)


class ShadowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    min_agreement: float = Field(default=0.99, ge=0, le=1)  # argmax agreement, for classifiers
    max_abs_error: float = Field(default=1e-4, ge=0)  # for outputs without class scores
    max_failed: float = Field(default=0.01, ge=0, le=1)  # share of copies the candidate failed


class OutcomesSettings(BaseModel):
    """Ground truth (feedback on): accuracy from class labels, else MAE from numeric outcomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False  # labels often come late: a rollout asks for this gate explicitly
    min_labels: int = Field(default=100, ge=1)  # per variant and window, else inconclusive
    alpha: float = Field(default=0.05, gt=0, lt=1)
    tolerance: float = Field(default=0.01, ge=0, le=1)  # accuracy points the candidate may lose
    max_mae_ratio: float = Field(default=1.1, ge=1)  # candidate MAE <= this x baseline's


class ConfidenceSettings(BaseModel):
    """Label-free: the mean probability of the predicted class."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    min_predictions: int = Field(default=100, ge=1)
    max_drop: float = Field(default=0.05, ge=0, le=1)


class OutputDriftSettings(BaseModel):
    """The candidate's predicted-class distribution against the baseline's, as PSI."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    min_predictions: int = Field(default=100, ge=1)
    max_psi: float = Field(default=0.25, gt=0)


class GateSettings(BaseModel):
    """The gates file (`--gates FILE`, YAML): each gate's thresholds, or `enabled: false`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    errors: ErrorsSettings = Field(default_factory=ErrorsSettings)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    # Streamed requests (generative models): their first answer, and the gaps between answers.
    first_response: LatencySettings = Field(default_factory=LatencySettings)
    response_gap: LatencySettings = Field(default_factory=LatencySettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    outcomes: OutcomesSettings = Field(default_factory=OutcomesSettings)
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)
    output_drift: OutputDriftSettings = Field(default_factory=OutputDriftSettings)


def one_sided_p_value(failed_a: int, total_a: int, failed_b: int, total_b: int, margin: float) -> float:
    """P-value of "A's failure rate exceeds B's by more than `margin`" being due to chance
    (Wald two-proportion test, one-sided). 1.0 when A is not above B + margin at all."""
    rate_a, rate_b = failed_a / total_a, failed_b / total_b
    excess = rate_a - rate_b - margin
    if excess <= 0:
        return 1.0
    spread = math.sqrt(rate_a * (1 - rate_a) / total_a + rate_b * (1 - rate_b) / total_b)
    if spread == 0:
        return 0.0
    return 0.5 * math.erfc(excess / spread / math.sqrt(2))


@dataclass(frozen=True, slots=True)
class ErrorsGate:
    settings: ErrorsSettings
    name: str = "errors"
    shadow_phase: bool = False

    def evaluate(self, evidence: Evidence) -> GateResult:
        candidate, baseline = evidence.candidate, evidence.baseline
        if not candidate.requests or not baseline.requests:
            return GateResult(self.name, Verdict.INCONCLUSIVE, detail="no requests in the window")
        p = one_sided_p_value(
            candidate.failures, candidate.requests, baseline.failures, baseline.requests, self.settings.tolerance
        )
        values = {
            "candidate_failure_rate": candidate.failures / candidate.requests,
            "baseline_failure_rate": baseline.failures / baseline.requests,
            "candidate_failures": candidate.failures,
            "baseline_failures": baseline.failures,
            "p_value": p,
        }
        failed = p < self.settings.alpha
        detail = (
            f"candidate fails {values['candidate_failure_rate']:.2%} of requests, baseline "
            f"{values['baseline_failure_rate']:.2%} (p={p:.3g}, alpha {self.settings.alpha:g}, "
            f"tolerance {self.settings.tolerance:.2%})"
        )
        return GateResult(self.name, Verdict.FAIL if failed else Verdict.PASS, values, detail)


_MEASURES = {"latency": "latencies", "first_response": "first-answer times", "response_gap": "gaps between answers"}


def _measured(totals: VariantTotals, measure: str) -> Latencies:
    if measure == "first_response":
        return totals.first_response
    if measure == "response_gap":
        return totals.gaps
    return Latencies(totals.buckets, totals.count)


@dataclass(frozen=True, slots=True)
class LatencyGate:
    """A quantile of the candidate's against the baseline's, in the same window: of unary
    latencies (`latency`), of streamed requests' first answers (`first_response`) or of the gaps
    between their answers (`response_gap`). When both variants served requests in the window but
    none measured so (all streamed, or all unary), there is nothing to judge: it passes."""

    settings: LatencySettings
    name: str = "latency"
    shadow_phase: bool = False

    def evaluate(self, evidence: Evidence) -> GateResult:
        q, what = self.settings.quantile, _MEASURES[self.name]
        measured = [_measured(totals, self.name) for totals in (evidence.candidate, evidence.baseline)]
        if not any(m.count for m in measured) and evidence.candidate.requests and evidence.baseline.requests:
            return GateResult(self.name, Verdict.PASS, detail=f"no {what} in the window: nothing to judge")
        candidate, baseline = (m.quantile(q) for m in measured)
        if candidate is None or baseline is None:
            return GateResult(self.name, Verdict.INCONCLUSIVE, detail=f"no {what} in the window")
        limit = self.settings.factor * baseline + self.settings.offset_ms / 1000
        label = f"p{100 * q:g}"
        values = {f"candidate_{label}_ms": candidate * 1000, f"baseline_{label}_ms": baseline * 1000,
                  "limit_ms": limit * 1000}  # fmt: skip
        detail = (
            f"{what}: candidate {label} {candidate * 1000:.1f} ms, baseline {baseline * 1000:.1f} ms, limit "
            f"{self.settings.factor:g} x baseline + {self.settings.offset_ms:g} ms = {limit * 1000:.1f} ms"
        )
        return GateResult(self.name, Verdict.FAIL if candidate > limit else Verdict.PASS, values, detail)


@dataclass(frozen=True, slots=True)
class ShadowGate:
    settings: ShadowSettings
    min_pairs: int
    name: str = "shadow"
    shadow_phase: bool = True

    def evaluate(self, evidence: Evidence) -> GateResult:
        shadow, settings = evidence.shadow, self.settings
        values: dict[str, float] = {"pairs": shadow.compared, "failed": shadow.failed}
        if shadow.compared < self.min_pairs:
            return GateResult(self.name, Verdict.INCONCLUSIVE, values,
                              f"{shadow.compared} of {self.min_pairs} paired answers")  # fmt: skip
        attempts = shadow.compared + shadow.failed
        failed_share = shadow.failed / attempts if attempts else 0.0
        if failed_share > settings.max_failed:
            return GateResult(self.name, Verdict.FAIL, values,
                              f"the candidate failed {failed_share:.1%} of the shadow copies")  # fmt: skip
        if shadow.argmax_compared:
            agreement = 1 - shadow.argmax_disagreements / shadow.argmax_compared
            values["argmax_agreement"] = agreement
            detail = (f"argmax agreement {agreement:.2%} over {shadow.argmax_compared} pairs "
                      f"(min {settings.min_agreement:.2%})")  # fmt: skip
            return GateResult(self.name, Verdict.PASS if agreement >= settings.min_agreement else Verdict.FAIL,
                              values, detail)  # fmt: skip
        # Regressions: errors counted at the histogram's bounds above the tolerance.
        over = sum(n for bound, n in zip(ABS_ERROR_BUCKETS, shadow.abs_error_buckets, strict=True)
                   if bound > settings.max_abs_error)  # fmt: skip
        values["over_tolerance"] = over
        detail = f"{over} of {shadow.compared} pairs differ by more than {settings.max_abs_error:g}"
        return GateResult(self.name, Verdict.FAIL if over else Verdict.PASS, values, detail)


@dataclass(frozen=True, slots=True)
class OutcomesGate:
    settings: OutcomesSettings
    name: str = "outcomes"
    shadow_phase: bool = False

    def evaluate(self, evidence: Evidence) -> GateResult:
        candidate, baseline, settings = evidence.candidate_quality, evidence.baseline_quality, self.settings
        values: dict[str, float] = {"candidate_labelled": candidate.labelled, "baseline_labelled": baseline.labelled}
        if candidate.labelled >= settings.min_labels and baseline.labelled >= settings.min_labels:
            c, b = candidate.accuracy or 0.0, baseline.accuracy or 0.0
            wrong_c, wrong_b = candidate.labelled - candidate.correct, baseline.labelled - baseline.correct
            p = one_sided_p_value(wrong_c, candidate.labelled, wrong_b, baseline.labelled, settings.tolerance)
            values |= {"candidate_accuracy": c, "baseline_accuracy": b, "p_value": p}
            detail = (f"accuracy {c:.2%} against {b:.2%} on {candidate.labelled} and {baseline.labelled} labels "
                      f"(p={p:.3g}, tolerance {settings.tolerance:.2%})")  # fmt: skip
            return GateResult(self.name, Verdict.FAIL if p < settings.alpha else Verdict.PASS, values, detail)
        if candidate.valued >= settings.min_labels and baseline.valued >= settings.min_labels:
            c, b = candidate.mae or 0.0, baseline.mae or 0.0
            values |= {"candidate_mae": c, "baseline_mae": b}
            failed = c > settings.max_mae_ratio * b
            detail = f"MAE {c:.4g} against {b:.4g} (limit {settings.max_mae_ratio:g} x baseline)"
            return GateResult(self.name, Verdict.FAIL if failed else Verdict.PASS, values, detail)
        return GateResult(self.name, Verdict.INCONCLUSIVE, values,
                          f"{candidate.labelled + candidate.valued} and {baseline.labelled + baseline.valued} "
                          f"outcomes joined (min {settings.min_labels} each)")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConfidenceGate:
    settings: ConfidenceSettings
    name: str = "confidence"
    shadow_phase: bool = False

    def evaluate(self, evidence: Evidence) -> GateResult:
        candidate, baseline = evidence.candidate_quality, evidence.baseline_quality
        c, b = candidate.mean_top, baseline.mean_top
        if c is None or b is None or min(candidate.with_top, baseline.with_top) < self.settings.min_predictions:
            return GateResult(self.name, Verdict.INCONCLUSIVE,
                              detail=f"{candidate.with_top} and {baseline.with_top} class predictions")  # fmt: skip
        values = {"candidate_confidence": c, "baseline_confidence": b}
        detail = f"mean top probability {c:.3f} against {b:.3f} (max drop {self.settings.max_drop:g})"
        return GateResult(self.name, Verdict.FAIL if c < b - self.settings.max_drop else Verdict.PASS, values, detail)


def class_psi(candidate: Mapping[int, int], baseline: Mapping[int, int], floor: float = 1e-4) -> float:
    """Population stability index of two class histograms (shares floored, so an empty class
    weighs a lot but finitely)."""
    classes = set(candidate) | set(baseline)
    total_c, total_b = sum(candidate.values()) or 1, sum(baseline.values()) or 1
    psi = 0.0
    for cls in classes:
        p = max(candidate.get(cls, 0) / total_c, floor)
        q = max(baseline.get(cls, 0) / total_b, floor)
        psi += (p - q) * math.log(p / q)
    return psi


@dataclass(frozen=True, slots=True)
class OutputDriftGate:
    settings: OutputDriftSettings
    name: str = "output_drift"
    shadow_phase: bool = False

    def evaluate(self, evidence: Evidence) -> GateResult:
        candidate, baseline = evidence.candidate_quality, evidence.baseline_quality
        counted = min(sum(candidate.classes.values()), sum(baseline.classes.values()))
        if counted < self.settings.min_predictions:
            return GateResult(self.name, Verdict.INCONCLUSIVE, detail=f"{counted} class predictions in the window")
        psi = class_psi(candidate.classes, baseline.classes)
        detail = f"predicted-class PSI {psi:.3f} against the baseline (max {self.settings.max_psi:g})"
        return GateResult(
            self.name, Verdict.FAIL if psi > self.settings.max_psi else Verdict.PASS, {"psi": psi}, detail
        )


def shadow_delta(now: ShadowCounters, earlier: ShadowCounters) -> ShadowCounters:
    """The comparisons made between two snapshots of the counters (maxima are not windowed)."""
    if now.compared < earlier.compared:  # reset by a restart
        return now
    return ShadowCounters(
        **{name: getattr(now, name) - getattr(earlier, name) for name in SUMMED},
        max_abs_error=now.max_abs_error,
        max_rel_error=now.max_rel_error,
        abs_error_buckets=[a - b for a, b in zip(now.abs_error_buckets, earlier.abs_error_buckets, strict=True)],
    )


def gates_for(settings: GateSettings, shadow_pairs: int, extra: Sequence[Gate] = ()) -> list[Gate]:
    """The gates a rollout judges with: the built-in ones its settings enable, then `extra`."""
    gates: list[Gate] = []
    if settings.errors.enabled:
        gates.append(ErrorsGate(settings.errors))
    for name in ("latency", "first_response", "response_gap"):
        latency: LatencySettings = getattr(settings, name)
        if latency.enabled:
            gates.append(LatencyGate(latency, name))
    if settings.shadow.enabled and shadow_pairs > 0:
        gates.append(ShadowGate(settings.shadow, shadow_pairs))
    if settings.outcomes.enabled:
        gates.append(OutcomesGate(settings.outcomes))
    if settings.confidence.enabled:
        gates.append(ConfidenceGate(settings.confidence))
    if settings.output_drift.enabled:
        gates.append(OutputDriftGate(settings.output_drift))
    return [*gates, *extra]
