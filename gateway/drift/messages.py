"""Drift in the admin API's messages."""

from __future__ import annotations

import math

from gateway.drift.loop import Drift
from gateway_admin import admin_pb2 as pb

__all__ = ["drift_to_proto"]


def drift_to_proto(drift: Drift, model: str) -> pb.GetDriftResponse:
    reference = drift.references.get(model)
    answer = pb.GetDriftResponse(model=model, reference_source=reference.source if reference else "",
                                 reference_samples=reference.samples if reference else 0,
                                 collecting=drift.collecting(model))  # fmt: skip
    if drift.trigger is not None:
        answer.triggers_fired, answer.triggers_skipped = drift.cooldown.fired, drift.cooldown.skipped
    for (name, variant), state in sorted(drift.views().items()):
        if name != model:
            continue
        entry = answer.variants.add(variant=variant, windows=state.windows, collecting=state.collecting,
                                    consecutive=state.consecutive)  # fmt: skip
        last = state.last
        if last is not None:
            entry.last_start, entry.last_end, entry.last_samples = last.start, last.end, last.samples
            entry.drifted_share, entry.drifted = last.drifted_share, last.drifted
            for f in last.features:
                entry.features.add(feature=f.feature, psi=f.psi, ks_p=math.nan if f.ks_p is None else f.ks_p,
                                   level=f.level, drifted=f.drifted)  # fmt: skip
    return answer
