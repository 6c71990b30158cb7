"""Drift statistics and windows, on made-up samples (no sockets)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config.schema import DriftConfig
from gateway.drift.features import OUTPUT_CLASS, arrays_features
from gateway.drift.monitor import DriftMonitor
from gateway.drift.stats import Thresholds, compare, psi, quantile_edges


def test_psi_is_zero_for_the_same_shares_and_grows_with_a_shift() -> None:
    assert psi(np.array([10, 10, 10]), np.array([20, 20, 20])) == pytest.approx(0.0)
    assert psi(np.array([50, 50]), np.array([90, 10])) > 0.25
    assert np.isfinite(psi(np.array([100, 0]), np.array([0, 100])))


def test_bins_are_cut_at_reference_quantiles() -> None:
    rng = np.random.default_rng(1)
    edges = quantile_edges(rng.normal(size=10_000), 10)
    assert len(edges) == 9 and edges[4] == pytest.approx(0.0, abs=0.05)
    assert len(quantile_edges(np.ones(100), 10)) == 1  # a constant feature: one edge, two bins


def test_a_shifted_feature_drifts_and_an_unchanged_one_does_not() -> None:
    rng = np.random.default_rng(2)
    reference = {"a": rng.normal(size=1000), "b": rng.normal(size=1000), OUTPUT_CLASS: rng.integers(0, 3, 1000) * 1.0}
    window = {"a": rng.normal(size=300) + 1.0, "b": rng.normal(size=300), OUTPUT_CLASS: np.zeros(300)}
    results = compare(reference, window, Thresholds(), categorical=frozenset({OUTPUT_CLASS}))
    by_name = {r.feature: r for r in results}
    assert by_name["a"].drifted and by_name["a"].level == "alert" and (by_name["a"].ks_p or 1.0) < 1e-10
    assert not by_name["b"].drifted and (by_name["b"].ks_p or 0.0) > 0.001
    assert by_name[OUTPUT_CLASS].drifted and by_name[OUTPUT_CLASS].ks_p is None
    assert [r.drifted for r in results] == sorted([r.drifted for r in results], reverse=True)  # the worst first


def test_small_inputs_give_a_feature_per_element_large_ones_their_mean_and_spread() -> None:
    features = arrays_features({"small": np.zeros((5, 3)), "big": np.ones((5, 100)), "text": np.array([b"x"] * 5)}, 64)
    assert sorted(features) == ["big.mean", "big.std", "small[0]", "small[1]", "small[2]"]
    assert features["big.mean"].shape == (5,)


def _sample(rng: np.random.Generator, shift: float) -> dict[str, np.ndarray]:
    return {"x": rng.normal(size=1) + shift, "y": rng.normal(size=1) + shift}


def test_the_reference_freezes_from_the_main_variant_and_alerts_need_windows_in_a_row() -> None:
    rng = np.random.default_rng(3)
    settings = DriftConfig(enabled=True, reference_samples=200, window_samples=100, consecutive=2)
    monitor = DriftMonitor(settings, main_variant=lambda model: "1", clock=lambda: 0.0)
    for _ in range(50):
        assert monitor.observe("m", "2", _sample(rng, 0.0)) is None  # not the main variant: not the reference
    for _ in range(200):
        monitor.observe("m", "1", _sample(rng, 0.0))
    assert monitor.references["m"].samples == 200 and "variant 1" in monitor.references["m"].source
    alerts = [monitor.observe("m", "2", _sample(rng, 0.0)) for _ in range(100)]
    assert not any(alerts) and monitor.variants[("m", "2")].last is not None
    assert not monitor.variants[("m", "2")].last.drifted
    first = [monitor.observe("m", "2", _sample(rng, 2.0)) for _ in range(100)]
    assert not any(first) and monitor.variants[("m", "2")].consecutive == 1
    second = [monitor.observe("m", "2", _sample(rng, 2.0)) for _ in range(100)]
    alert = second[-1]
    assert alert is not None and alert.result.drifted_share == 1.0 and alert.result.consecutive == 2
    assert alert.result.features[0].feature in ("x", "y")


def test_windows_can_close_on_time() -> None:
    now = [0.0]
    settings = DriftConfig(enabled=True, reference_samples=10, window_samples=1000, window_s=5.0, min_samples=3)
    monitor = DriftMonitor(settings, main_variant=lambda model: None, clock=lambda: now[0])
    rng = np.random.default_rng(4)
    for _ in range(10):
        monitor.observe("m", "1", _sample(rng, 0.0))
    for step in range(4):
        now[0] = float(step * 2)
        monitor.observe("m", "1", _sample(rng, 0.0))
    assert monitor.variants[("m", "1")].windows == 1  # closed at 6 s with 4 samples
