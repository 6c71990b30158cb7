"""Shadow comparison results per (model, primary variant, shadow variant), kept in memory.

The core counts (crates/dataplane/src/shadow.rs); `CoreShadowStats` reads its counters in this
shape for the admin API, the metrics and the rollout gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
