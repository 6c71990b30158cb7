"""Outcomes and per-variant quality in the admin API's messages."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.errors import InvalidRequest
from gateway.feedback.quality import LAG_BUCKETS, Outcome, QualityTotals
from gateway_admin import admin_pb2 as pb

__all__ = ["outcome_from_proto", "outcomes_to_proto"]


def outcome_from_proto(outcome: pb.Outcome, index: int) -> Outcome:
    kind = outcome.WhichOneof("truth")
    if not outcome.request_id:
        raise InvalidRequest(f"outcomes[{index}]: no request_id (the request's id, or its x-request-id)")
    if kind is None:
        raise InvalidRequest(f"outcomes[{index}] ({outcome.request_id}): give one of class_label, value, reward")
    truth = getattr(outcome, kind)
    if kind != "class_label" and not math.isfinite(truth):
        raise InvalidRequest(f"outcomes[{index}] ({outcome.request_id}): {kind} is not a finite number")
    return Outcome(
        outcome.request_id,
        label=truth if kind == "class_label" else None,
        value=truth if kind == "value" else None,
        reward=truth if kind == "reward" else None,
        observed=outcome.observed_time,
    )


def _quality(variant: str, q: QualityTotals) -> pb.VariantQuality:
    def number(value: float | None) -> float:
        return math.nan if value is None else value

    lag = {("+Inf" if bound == math.inf else f"{bound:g}"): n for bound, n in zip(LAG_BUCKETS, q.lag, strict=True)}
    return pb.VariantQuality(
        variant=variant, predictions=q.predictions, labelled=q.labelled, accuracy=number(q.accuracy),
        valued=q.valued, mae=number(q.mae), rmse=number(q.rmse), rewarded=q.rewarded,
        mean_reward=number(q.mean_reward), coverage=number(q.coverage), late=q.late, duplicate=q.duplicate,
        mean_top_probability=number(q.mean_top), predicted_classes=q.classes, label_lag_histogram=lag,
    )  # fmt: skip


def outcomes_to_proto(
    model: str, totals: Mapping[tuple[str, str], QualityTotals], unmatched: int
) -> pb.GetOutcomesResponse:
    variants = [_quality(variant, q) for (name, variant), q in sorted(totals.items()) if name == model]
    return pb.GetOutcomesResponse(model=model, variants=variants, unmatched=unmatched)
