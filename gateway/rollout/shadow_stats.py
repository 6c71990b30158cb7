"""Shadow comparison results per (model, primary variant, shadow variant).

The core counts (crates/dataplane/src/shadow/); `CoreShadowStats` reads its counters in this
shape for the admin API, the metrics and the rollout gates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from gateway import _core

__all__ = ["ABS_ERROR_BUCKETS", "SUMMED", "ShadowCounters", "ShadowCountersError", "ShadowStats"]

# Upper bounds of the absolute-error histogram ("le", as Prometheus does); inf is the last.
ABS_ERROR_BUCKETS: tuple[float, ...] = tuple(_core.ABS_ERROR_BUCKETS)  # the core's own


# The counters that add up (and subtract over a window); the errors' maxima do not.
SUMMED = ("sent", "dropped", "failed", "compared", "exact_matches", "argmax_compared", "argmax_disagreements",
          "mismatches", "streams", "first_k_agreements", "first_response_pairs", "primary_first_response_s",
          "shadow_first_response_s")  # fmt: skip


class ShadowCountersError(ValueError):
    """Counters that are not what the core promises (a missing, mistyped or non-finite field)."""


@dataclass
class ShadowCounters:
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    compared: int = 0
    exact_matches: int = 0
    argmax_compared: int = 0
    argmax_disagreements: int = 0
    mismatches: int = 0  # compared pairs with an output not comparable number by number
    max_abs_error: float = 0.0  # finite, as every error the core reports
    max_rel_error: float = 0.0
    abs_error_buckets: list[int] = field(default_factory=lambda: [0] * len(ABS_ERROR_BUCKETS))
    # Streamed requests (their answers concatenated into one comparison), of the compared: how
    # many, how many agreed on their first few answers, and the time to the first answer of
    # primary and shadow (sums over the pairs that had one).
    streams: int = 0
    first_k_agreements: int = 0
    first_response_pairs: int = 0
    primary_first_response_s: float = 0.0
    shadow_first_response_s: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowCounters:
        """Counters as JSON carries them (from the core, or another replica), checked field by
        field: a count is a non-negative integer, an error a finite number; an absent field is 0
        (an older replica's)."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = data.get(spec.name)
            if raw is None and spec.name not in data:
                continue
            if spec.name == "abs_error_buckets":
                if not isinstance(raw, list) or len(raw) != len(ABS_ERROR_BUCKETS):
                    expected = len(ABS_ERROR_BUCKETS)
                    raise ShadowCountersError(f"abs_error_buckets: {expected} counts expected, got {raw!r}")
                values[spec.name] = [_count("abs_error_buckets", n) for n in raw]
            elif spec.type == "float":
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    raise ShadowCountersError(f"{spec.name}: a finite number expected, got {raw!r}")
                values[spec.name] = float(raw)
            else:
                values[spec.name] = _count(spec.name, raw)
        return cls(**values)


def _count(name: str, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ShadowCountersError(f"{name}: a count expected, got {raw!r}")
    return raw


Key = tuple[str, str, str]  # model, primary variant, shadow variant


class ShadowStats(Protocol):
    """Where the counters are read from (the core's: `gateway.serving.gateway.CoreShadowStats`)."""

    def snapshot(self, model: str = "") -> dict[Key, ShadowCounters]:
        """Every (model, primary, shadow) pair's counters; `model` "" for all."""
        ...
