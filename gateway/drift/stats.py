"""Drift statistics, pure: a window of values against a reference, per feature.

PSI over bins cut at the reference's quantiles (so each bin holds an equal share of the
reference), and the two-sample Kolmogorov-Smirnov test (scipy) with a Bonferroni correction over
the features compared. A feature counts as drifted when its PSI reaches the alert level, or
when KS rejects and its PSI reaches the warning level (KS alone flags tiny shifts on large
windows; PSI alone has no notion of chance).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["FeatureDrift", "Thresholds", "compare", "psi", "quantile_edges"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    bins: int = 10
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    ks_alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    feature: str
    psi: float
    ks_p: float | None  # None for categorical features
    level: str  # ok | warn | alert
    drifted: bool


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (repeated edges merged: a constant feature
    has one bin)."""
    edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def psi(reference_counts: np.ndarray, window_counts: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index; shares floored so that an empty bin weighs a lot, finitely."""
    p = np.maximum(window_counts / max(window_counts.sum(), 1), floor)
    q = np.maximum(reference_counts / max(reference_counts.sum(), 1), floor)
    return float(np.sum((p - q) * np.log(p / q)))


def _numeric(name: str, reference: np.ndarray, window: np.ndarray, t: Thresholds, tests: int) -> FeatureDrift:
    edges = quantile_edges(reference, t.bins)
    before, now = (np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
                   for values in (reference, window))  # fmt: skip
    value = psi(before, now)
    p = float(stats.ks_2samp(reference, window).pvalue) if len(np.unique(reference)) > 1 else 1.0
    rejected = p < t.ks_alpha / max(tests, 1)
    level = "alert" if value >= t.psi_alert else "warn" if value >= t.psi_warn else "ok"
    return FeatureDrift(name, value, p, level, level == "alert" or (rejected and level == "warn"))


def _categorical(name: str, reference: np.ndarray, window: np.ndarray, t: Thresholds) -> FeatureDrift:
    classes = np.union1d(np.unique(reference), np.unique(window))
    before, now = (np.array([(values == c).sum() for c in classes]) for values in (reference, window))
    value = psi(before, now)
    level = "alert" if value >= t.psi_alert else "warn" if value >= t.psi_warn else "ok"
    return FeatureDrift(name, value, None, level, level == "alert")


def compare(reference: Mapping[str, np.ndarray], window: Mapping[str, np.ndarray], thresholds: Thresholds,
            categorical: frozenset[str] = frozenset()) -> list[FeatureDrift]:  # fmt: skip
    """Every feature both have, the worst first."""
    names = [n for n in reference if n in window and len(reference[n]) and len(window[n])]
    tests = sum(1 for n in names if n not in categorical)
    results = [
        _categorical(n, reference[n], window[n], thresholds) if n in categorical
        else _numeric(n, reference[n], window[n], thresholds, tests)
        for n in names
    ]  # fmt: skip
    return sorted(results, key=lambda r: (not r.drifted, -r.psi))
