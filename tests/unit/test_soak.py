"""The soak's RSS growth: medians over a minute, so one sample's spike or dip is not growth."""

from __future__ import annotations

import pytest

from loadtest.soak import rss_growth

MIB = 2**20


def _samples(rss_at: dict[int, float], minutes: int = 10) -> list[tuple[float, int]]:
    """Every 5 s, 100 MiB unless `rss_at` says otherwise for that second."""
    return [(float(t), int(rss_at.get(t, 100) * MIB)) for t in range(0, minutes * 60 + 1, 5)]


def test_a_flat_run_with_spikes_and_dips_has_no_growth() -> None:
    settled, final, growth = rss_growth(_samples({60: 90, 95: 110, 600: 108, 590: 95}))
    assert settled == final == 100 * MIB
    assert growth == 0


def test_steady_growth_is_measured() -> None:
    samples = [(float(t), int((100 + t / 60) * MIB)) for t in range(0, 601, 5)]  # +1 MiB a minute
    settled, final, growth = rss_growth(samples)
    assert settled == pytest.approx(101.46 * MIB, rel=1e-3)  # the middle of the second minute
    assert final == pytest.approx(109.54 * MIB, rel=1e-3)  # the middle of the last minute
    assert growth == pytest.approx(final / settled - 1)


def test_a_run_shorter_than_two_minutes_compares_with_the_first_sample() -> None:
    samples = [(0.0, 100 * MIB), (30.0, 104 * MIB), (55.0, 104 * MIB)]
    settled, final, growth = rss_growth(samples)
    assert (settled, final) == (100 * MIB, 104 * MIB)
    assert growth == pytest.approx(0.04)
