"""Shadow comparison results per (model, primary variant, shadow variant).

The core counts (crates/dataplane/src/shadow.rs); `CoreShadowStats` reads its counters in this
shape for the admin API, the metrics and the rollout gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

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


class ShadowStats(Protocol):
    """Where the counters are read from (the core's: `gateway.serving.gateway.CoreShadowStats`)."""

    def snapshot(self, model: str = "") -> dict[Key, ShadowCounters]:
        """Every (model, primary, shadow) pair's counters; `model` "" for all."""
        ...
