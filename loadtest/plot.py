"""PNG plots of a run: latency percentiles and throughput over time, per second of the run.

Each Result keeps (intended send time, latency) for every measured request; a plot bins them by
second. Several results (direct and through the gateway, say) share the axes, one colour each.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from loadtest.runner import Result

__all__ = ["per_second", "plot_bench", "plot_results", "plot_rss"]

PERCENTILES = (50.0, 99.0)


def per_second(result: Result) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
    """Second index, requests sent in that second, and each percentile's latency (ms) there."""
    if not result.timeline:
        return np.array([]), np.array([]), {p: np.array([]) for p in PERCENTILES}
    sent = np.array([t for t, _ in result.timeline])
    latency_ms = np.array([latency for _, latency in result.timeline]) * 1000
    seconds = np.floor(sent).astype(int)
    bins = np.arange(seconds.max() + 1)
    counts = np.bincount(seconds, minlength=len(bins))
    percentiles = {
        p: np.array([np.percentile(latency_ms[seconds == s], p) if counts[s] else np.nan for s in bins])
        for p in PERCENTILES
    }
    return bins, counts, percentiles


def plot_results(results: Sequence[tuple[str, Result]], title: str, path: Path) -> Path:
    """One PNG: latency percentiles (log scale) above, throughput below, one colour per result."""
    figure, (latency_axes, rate_axes) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for index, (label, result) in enumerate(results):
        bins, counts, percentiles = per_second(result)
        colour = f"C{index}"
        for p, style in zip(PERCENTILES, ("-", "--"), strict=True):
            latency_axes.plot(bins, percentiles[p], style, color=colour, label=f"{label} p{p:g}")
        rate_axes.plot(bins, counts, color=colour, label=label)
    latency_axes.set_yscale("log")
    latency_axes.set_ylabel("latency (ms)")
    latency_axes.legend(loc="upper right", fontsize="small")
    latency_axes.grid(True, which="both", alpha=0.3)
    rate_axes.set_ylabel("requests per second")
    rate_axes.set_xlabel("seconds since the measured window began")
    rate_axes.legend(loc="lower right", fontsize="small")
    rate_axes.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_bench(rows: Sequence[dict[str, object]], path: Path) -> Path:
    """One PNG for `make bench`: each scenario's throughput ratio, and p99 of baseline vs gateway
    (rows without those, such as the side-by-side cost rows, are in the table only)."""
    rows = [row for row in rows if "ratio" in row and "direct_p99_ms" in row]
    names = [str(row["scenario"]) for row in rows]
    ratios = [float(row["ratio"] or 0.0) for row in rows]  # type: ignore[arg-type]
    p99 = [(float(row["direct_p99_ms"]), float(row["gateway_p99_ms"])) for row in rows]  # type: ignore[arg-type]
    figure, (ratio_axes, p99_axes) = plt.subplots(1, 2, figsize=(14, 0.6 * len(rows) + 2), sharey=True)
    positions = np.arange(len(rows))
    ratio_axes.barh(positions, ratios, color=["C2" if r >= 1 else "C3" for r in ratios])
    ratio_axes.axvline(1.0, color="black", linewidth=0.8)
    ratio_axes.set_yticks(positions, names, fontsize="small")
    ratio_axes.invert_yaxis()
    ratio_axes.set_xlabel("throughput, gateway / baseline")
    height = 0.4
    p99_axes.barh(positions - height / 2, [b for b, _ in p99], height, label="baseline", color="C0")
    p99_axes.barh(positions + height / 2, [g for _, g in p99], height, label="gateway", color="C1")
    p99_axes.set_xscale("log")
    p99_axes.set_xlabel("p99 latency (ms)")
    p99_axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_rss(samples: Sequence[tuple[float, int]], title: str, path: Path) -> Path:
    """Memory over a soak run: (seconds, bytes) samples."""
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.plot([seconds / 60 for seconds, _ in samples], [rss / 2**20 for _, rss in samples])
    axes.set_xlabel("minutes")
    axes.set_ylabel("gateway RSS (MiB)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
