"""What every replica's data plane has answered, for the leader's windows: each replica publishes
its running totals (the variants of models under a rollout, and their shadow counters) every
tick, and the leader sums, per replica, the change since the window's start. A replica that
restarts starts its totals again; one that goes away stops counting."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from gateway.rollout.gates import shadow_delta
from gateway.rollout.shadow_stats import SUMMED, ShadowCounters, ShadowStats
from gateway.rollout.totals import VariantTotals

__all__ = ["Snapshot", "add_shadows", "shadow_totals", "window"]

Key = tuple[str, str]  # model, variant
_SEP = "\x1f"


def add_shadows(a: ShadowCounters, b: ShadowCounters) -> ShadowCounters:
    return ShadowCounters(
        **{name: getattr(a, name) + getattr(b, name) for name in SUMMED},
        max_abs_error=max(a.max_abs_error, b.max_abs_error), max_rel_error=max(a.max_rel_error, b.max_rel_error),
        abs_error_buckets=[x + y for x, y in zip(a.abs_error_buckets, b.abs_error_buckets, strict=True)],
    )  # fmt: skip


def shadow_totals(stats: ShadowStats, models: Iterable[str]) -> dict[Key, ShadowCounters]:
    """Shadow counters per (model, shadow variant), summed over the primaries they were compared with."""
    totals: dict[Key, ShadowCounters] = {}
    for model in models:
        for (_, _, shadow), counters in stats.snapshot(model).items():
            totals[(model, shadow)] = add_shadows(totals.get((model, shadow), ShadowCounters()), counters)
    return totals


@dataclass(frozen=True)
class Snapshot:
    variants: dict[Key, VariantTotals] = field(default_factory=dict)
    shadows: dict[Key, ShadowCounters] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "variants": {_SEP.join(k): v.to_dict() for k, v in self.variants.items()},
            "shadows": {_SEP.join(k): asdict(v) for k, v in self.shadows.items()},
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        data = json.loads(text)

        def key(joined: str) -> Key:
            model, _, variant = joined.partition(_SEP)
            return model, variant

        return cls({key(k): VariantTotals.from_dict(v) for k, v in data["variants"].items()},
                   {key(k): ShadowCounters.from_dict(v) for k, v in data["shadows"].items()})  # fmt: skip


def window(
    now: Mapping[str, Snapshot], marks: Mapping[str, Snapshot], key: Key
) -> tuple[VariantTotals, ShadowCounters]:
    """The change since `marks`, summed over the replicas in `now` (a replica not in `marks`
    counts from zero: it joined, or restarted, since)."""
    totals, shadow = VariantTotals(), ShadowCounters()
    for owner, snapshot in now.items():
        earlier = marks.get(owner, Snapshot())
        current = snapshot.variants.get(key, VariantTotals())
        totals = totals.plus(current.minus(earlier.variants.get(key, VariantTotals())))
        if key in snapshot.shadows:
            delta = snapshot.shadows[key]
            if key in earlier.shadows:
                delta = shadow_delta(delta, earlier.shadows[key])
            shadow = add_shadows(shadow, delta)
    return totals, shadow
