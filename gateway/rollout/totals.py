"""What a variant has answered so far: requests by gRPC code and a latency histogram (and for
streamed requests of generative models, the time to the first answer and the gaps between
answers), as running totals. A window is the difference of two totals taken at its ends, so the candidate and the
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
    "Latencies",
    "VariantTotals",
    "totals_from_core",
]

LATENCY_BUCKETS: tuple[float, ...] = tuple(_core.LATENCY_BUCKETS)  # the core's: 100 µs to 10 s, +Inf implied

# The statuses that mean the variant failed the request.
FAILURE_CODES = frozenset({"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "DATA_LOSS"})
# Not the variant's doing: the caller's mistakes, callers leaving, the gateway's own shedding.
CALLER_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"})


# How a streamed request ended, as the status a unary call would have had.
_STREAM_CODES = {"done": "OK", "failed": "UNKNOWN", "cancelled": "CANCELLED", "broken": "UNAVAILABLE"}


def _quantile(buckets: tuple[int, ...], count: int, q: float) -> float | None:
    """Seconds, interpolated within its bucket as Prometheus' histogram_quantile does; None
    without observations. Past the last bound: the last bound."""
    if count == 0:
        return None
    rank, cumulative, lower = q * count, 0, 0.0
    for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
        if n and cumulative + n >= rank:
            return lower + (bound - lower) * (rank - cumulative) / n
        cumulative += n
        lower = bound
    return LATENCY_BUCKETS[-1]


@dataclass(frozen=True, slots=True)
class Latencies:
    """A latency histogram as running totals (per bound of LATENCY_BUCKETS, not cumulative)."""

    buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS)
    count: int = 0

    def minus(self, earlier: Latencies) -> Latencies:
        if self.count < earlier.count:
            return self
        return Latencies(tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True)),
                         self.count - earlier.count)  # fmt: skip

    def plus(self, other: Latencies) -> Latencies:
        return Latencies(tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
                         self.count + other.count)  # fmt: skip

    def quantile(self, q: float) -> float | None:
        return _quantile(self.buckets, self.count, q)

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> Latencies:
        """From a core histogram row (`buckets`, `count`); empty for none."""
        if not row or not row.get("buckets"):
            return cls()
        return cls(tuple(row["buckets"]), int(row["count"]))


@dataclass(frozen=True, slots=True)
class VariantTotals:
    codes: Mapping[str, int] = field(default_factory=dict)
    buckets: tuple[int, ...] = (0,) * len(LATENCY_BUCKETS)  # per bound of LATENCY_BUCKETS, not cumulative
    count: int = 0  # latency observations (the last bucket, +Inf, is count - sum(buckets))
    # Streamed requests: time to the first answer, and between answers.
    first_response: Latencies = field(default_factory=Latencies)
    gaps: Latencies = field(default_factory=Latencies)

    def minus(self, earlier: VariantTotals) -> VariantTotals:
        """The window from `earlier` to this. Totals that went down were reset (a restarted
        process): then this whole total is the window."""
        reset = self.count < earlier.count or self.first_response.count < earlier.first_response.count
        if reset or any(n < earlier.codes.get(c, 0) for c, n in self.codes.items()):
            return self
        codes = {c: n - earlier.codes.get(c, 0) for c, n in self.codes.items()}
        buckets = tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True))
        first, gaps = self.first_response.minus(earlier.first_response), self.gaps.minus(earlier.gaps)
        return VariantTotals({c: n for c, n in codes.items() if n}, buckets, self.count - earlier.count, first, gaps)

    def plus(self, other: VariantTotals) -> VariantTotals:
        codes = dict(self.codes)
        for code, n in other.codes.items():
            codes[code] = codes.get(code, 0) + n
        buckets = tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True))
        return VariantTotals(codes, buckets, self.count + other.count, self.first_response.plus(other.first_response),
                             self.gaps.plus(other.gaps))  # fmt: skip

    @property
    def requests(self) -> int:
        """Requests the variant itself answered or failed (the caller's errors not counted)."""
        return sum(n for code, n in self.codes.items() if code not in CALLER_CODES)

    @property
    def failures(self) -> int:
        return sum(n for code, n in self.codes.items() if code in FAILURE_CODES)

    def quantile(self, q: float) -> float | None:
        """Of the unary latencies (see `_quantile`)."""
        return _quantile(self.buckets, self.count, q)

    def to_dict(self) -> dict[str, Any]:
        latencies = {name: {"buckets": list(value.buckets), "count": value.count}
                     for name, value in (("first_response", self.first_response), ("gaps", self.gaps))}  # fmt: skip
        return {"codes": dict(self.codes), "buckets": list(self.buckets), "count": self.count, **latencies}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariantTotals:
        return cls(dict(data["codes"]), tuple(data["buckets"]), int(data["count"]),
                   Latencies.of(data.get("first_response")), Latencies.of(data.get("gaps")))  # fmt: skip


Key = tuple[str, str]  # model, variant


def totals_from_core(snapshot: Mapping[str, Any]) -> dict[Key, VariantTotals]:
    """The native core's stats snapshot (`Core.stats`, parsed) as totals per (model, variant):
    ModelInfer calls, and the requests of streams (counted by how they ended)."""
    series = snapshot["series"]
    codes: dict[Key, dict[str, int]] = {}
    for row in series["requests"]:
        if row["method"] == "ModelInfer" and row["variant"]:
            key = (row["model"], row["variant"])
            codes.setdefault(key, {})[row["code"]] = row["count"]
    streams = {(row["model"], row["variant"]): row for row in series.get("streams", []) if row["variant"]}
    for key, row in streams.items():
        by_code = codes.setdefault(key, {})
        for ending, count in row["ended"].items():
            if count:
                by_code[_STREAM_CODES[ending]] = by_code.get(_STREAM_CODES[ending], 0) + count
    histograms = {(row["model"], row["variant"]): row for row in series.get("variants", [])}
    totals = {}
    for key, by_code in codes.items():
        unary, streamed = Latencies.of(histograms.get(key)), streams.get(key, {})
        totals[key] = VariantTotals(by_code, unary.buckets, unary.count, Latencies.of(streamed.get("first_response")),
                                    Latencies.of(streamed.get("gaps")))  # fmt: skip
    return totals
