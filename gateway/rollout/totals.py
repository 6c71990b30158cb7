"""What a variant has answered so far: requests by gRPC code and a latency histogram, as running
totals. A window is the difference of two totals taken at its ends, so the candidate and the
baseline are always compared over the same stretch of time.

The core keeps the totals (in its stats snapshot); the rollout controller only reads them at
control rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway import _core

__all__ = [
    "CALLER_CODES",
    "FAILURE_CODES",
    "LATENCY_BUCKETS",
    "VariantTotals",
    "totals_from_core",
]

LATENCY_BUCKETS: tuple[float, ...] = tuple(_core.LATENCY_BUCKETS)  # the core's: 100 µs to 10 s, +Inf implied

# The statuses that mean the variant failed the request.
FAILURE_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "DATA_LOSS"})
# Not the variant's doing: the caller's mistakes, callers leaving, the gateway's own shedding.
CALLER_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"})


@dataclass(frozen=True, slots=True)
class VariantTotals:
    codes: Mapping[str, int] = field(default_factory=dict)
    buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS)  # per bound of LATENCY_BUCKETS, not cumulative
    count: int = 0  # latency observations (the last bucket, +Inf, is count - sum(buckets))

    def minus(self, earlier: VariantTotals) -> VariantTotals:
        """The window from `earlier` to this. Totals that went down were reset (a restarted
        process): then this whole total is the window."""
        if self.count < earlier.count or any(n < earlier.codes.get(c, 0) for c, n in self.codes.items()):
            return self
        codes = {c: n - earlier.codes.get(c, 0) for c, n in self.codes.items()}
        buckets = tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True))
        return VariantTotals({c: n for c, n in codes.items() if n}, buckets, self.count - earlier.count)

    def plus(self, other: VariantTotals) -> VariantTotals:
        codes = dict(self.codes)
        for code, n in other.codes.items():
            codes[code] = codes.get(code, 0) + n
        buckets = tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True))
        return VariantTotals(codes, buckets, self.count + other.count)

    @property
    def requests(self) -> int:
        """Requests the variant itself answered or failed (the caller's errors not counted)."""
        return sum(n for code, n in self.codes.items() if code not in CALLER_CODES)

    @property
    def failures(self) -> int:
        return sum(n for code, n in self.codes.items() if code in FAILURE_CODES)

    def quantile(self, q: float) -> float | None:
        """Seconds, interpolated within its bucket as Prometheus' histogram_quantile does; None
        without observations. Past the last bound: the last bound."""
        if self.count == 0:
            return None
        rank, cumulative, lower = q * self.count, 0, 0.0
        for bound, n in zip(LATENCY_BUCKETS, self.buckets, strict=True):
            if n and cumulative + n >= rank:
                return lower + (bound - lower) * (rank - cumulative) / n
            cumulative += n
            lower = bound
        return LATENCY_BUCKETS[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"codes": dict(self.codes), "buckets": list(self.buckets), "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantTotals:
        return cls(dict(data["codes"]), tuple(data["buckets"]), int(data["count"]))


Key = tuple[str, str]  # model, variant


def totals_from_core(snapshot: Mapping[str, Any]) -> dict[Key, VariantTotals]:
    """The native core's stats snapshot (`Core.stats`, parsed) as totals per (model, variant)."""
    series = snapshot["series"]
    codes: dict[Key, dict[str, int]] = {}
    for row in series["requests"]:
        if row["method"] == "ModelInfer" and row["variant"]:
            key = (row["model"], row["variant"])
            codes.setdefault(key, {})[row["code"]] = row["count"]
    histograms = {(row["model"], row["variant"]): row for row in series.get("variants", [])}
    totals = {}
    for key, by_code in codes.items():
        row = histograms.get(key)
        buckets = tuple(row["buckets"]) if row else (0,) * len(LATENCY_BUCKETS)
        totals[key] = VariantTotals(by_code, buckets or (0,) * len(LATENCY_BUCKETS), row["count"] if row else 0)
    return totals
