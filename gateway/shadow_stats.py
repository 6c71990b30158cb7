"""Shadow comparison results per (model, primary variant, shadow variant), kept in memory.

An injectable object: the admin API reads snapshots, the telemetry exporter reads the same.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from gateway.compare import Comparison

__all__ = ["ABS_ERROR_BUCKETS", "ShadowCounters", "ShadowStats"]

# Upper bounds of the absolute-error histogram ("le", as Prometheus does); inf is the last.
ABS_ERROR_BUCKETS: tuple[float, ...] = (0.0, 1e-9, 1e-6, 1e-4, 1e-2, 1e-1, 1.0, 10.0, float("inf"))


@dataclass
class ShadowCounters:
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    compared: int = 0
    exact_matches: int = 0
    argmax_compared: int = 0
    argmax_disagreements: int = 0
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    abs_error_buckets: list[int] = field(default_factory=lambda: [0] * len(ABS_ERROR_BUCKETS))

    def record(self, comparison: Comparison) -> None:
        self.compared += 1
        self.exact_matches += comparison.exact
        if comparison.has_class_scores:
            self.argmax_compared += 1
            self.argmax_disagreements += comparison.argmax_disagrees
        self.max_abs_error = max(self.max_abs_error, comparison.max_abs_error)
        self.max_rel_error = max(self.max_rel_error, comparison.max_rel_error)
        self.abs_error_buckets[bisect.bisect_left(ABS_ERROR_BUCKETS, comparison.max_abs_error)] += 1


Key = tuple[str, str, str]  # model, primary variant, shadow variant


class ShadowStats:
    def __init__(self) -> None:
        self._counters: dict[Key, ShadowCounters] = {}

    def counters(self, model: str, primary: str, shadow: str) -> ShadowCounters:
        key = (model, primary, shadow)
        found = self._counters.get(key)
        if found is None:
            found = self._counters[key] = ShadowCounters()
        return found

    def snapshot(self, model: str = "") -> dict[Key, ShadowCounters]:
        return {
            key: replace(c, abs_error_buckets=list(c.abs_error_buckets))
            for key, c in sorted(self._counters.items())
            if not model or key[0] == model
        }
