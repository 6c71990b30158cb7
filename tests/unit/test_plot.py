"""Per-second binning behind the load-test plots, and the PNGs themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from loadtest.plot import per_second, plot_bench, plot_results
from loadtest.runner import Result


def _result(timeline: list[tuple[float, float]]) -> Result:
    result = Result("s", "t", 3.0)
    result.timeline = timeline
    return result


def test_requests_are_binned_by_the_second_they_were_meant_to_be_sent() -> None:
    result = _result([(0.1, 0.001), (0.9, 0.003), (2.5, 0.010)])
    bins, counts, percentiles = per_second(result)
    assert bins.tolist() == [0, 1, 2] and counts.tolist() == [2, 0, 1]
    assert percentiles[50.0][0] == 2.0 and np.isnan(percentiles[50.0][1]) and percentiles[99.0][2] == 10.0


def test_plots_are_written_as_png(tmp_path: Path) -> None:
    run = plot_results([("direct", _result([(0.2, 0.001)])), ("gateway", _result([]))], "t", tmp_path / "a.png")
    row = {"scenario": "x", "ratio": 0.5, "direct_p99_ms": 1.0, "gateway_p99_ms": 2.0}
    side_by_side = {"scenario": "z", "gateway_cpu_us_per_request": 1.0, "nginx_cpu_us_per_request": 2.0}
    bench = plot_bench([row, row | {"scenario": "y", "ratio": 2.0}, side_by_side], tmp_path / "b.png")
    for path in (run, bench):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
