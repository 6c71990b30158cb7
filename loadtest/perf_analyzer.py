"""NVIDIA's perf_analyzer (2.51, installed by `make perf-analyzer`) as the benchmark's C++ load
generator, where the Python generator's own CPU would hide what the gateway can do.

Runs use time windows (`-p`), not a request count: perf_analyzer rounds a request-count run's
duration to whole seconds, which skews its throughput. The stability threshold is 100% because a
shared 2-core machine rarely gives three windows within perf_analyzer's default 10%.
"""

from __future__ import annotations

import csv
import os
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BINARY", "PerfAnalyzerRun", "environment", "measure", "run"]

TOOL = Path(__file__).resolve().parents[1] / ".tools" / "perf_analyzer"
BINARY = TOOL / "bin" / "perf_analyzer"
# tritonclient's C++ gRPC client shares one channel among up to six clients (perf_analyzer's
# concurrency contexts); at 1 every context opens a connection of its own.
_SHARE_COUNT = "TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT"


def environment(connection_per_context: bool = False) -> dict[str, str]:
    """The process environment perf_analyzer needs: the CUDA runtime it links (no GPU is used)."""
    extra = {"LD_LIBRARY_PATH": str(TOOL / "nvidia" / "cuda_runtime" / "lib")}
    if connection_per_context:
        extra[_SHARE_COUNT] = "1"
    return os.environ | extra


def run(arguments: list[str], connection_per_context: bool = False, timeout_s: float = 120.0) -> str:
    """perf_analyzer with these arguments; its standard output. Fails with its output when it does."""
    if not BINARY.exists():
        raise FileNotFoundError(f"{BINARY} is missing: run `make perf-analyzer`")
    done = subprocess.run(
        [str(BINARY), *arguments], capture_output=True, text=True, timeout=timeout_s,
        env=environment(connection_per_context), check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return done.stdout


@dataclass
class PerfAnalyzerRun:
    """One perf_analyzer measurement, shaped like `loadtest.runner.Result` for `compare`.

    Its latencies are those of the measured windows; `codes` counts the requests of the whole run
    (throughput times its wall time, warm-up windows included) so that CPU time taken over the same
    run divides by the requests it served."""

    target: str
    seconds: float
    throughput: float
    latency_us: dict[float, float]  # percentile -> µs
    codes: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    def percentile_ms(self, percentile: float) -> float:
        return self.latency_us[percentile] / 1000.0


def measure(
    address: str, model: str, shape: str, concurrency: int, window_ms: int = 2000, connection_per_context: bool = False
) -> PerfAnalyzerRun:
    """Closed loop at `concurrency` against `address` (gRPC), three stable windows of `window_ms`
    (up to six tried: on a loaded 2-core box three in a row can take more)."""
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as folder:
        table = Path(folder) / "result.csv"
        arguments = ["-m", model, "-i", "grpc", "-u", address, "--shape", shape,
                     "--concurrency-range", str(concurrency), "-p", str(window_ms), "-s", "100", "-r", "6",
                     "-f", str(table)]  # fmt: skip
        started = time.monotonic()
        run(arguments, connection_per_context)
        seconds = time.monotonic() - started
        with table.open() as rows:
            row = next(csv.DictReader(rows))
    throughput = float(row["Inferences/Second"])
    latency_us = {float(p): float(row[f"p{p} latency"]) for p in (50, 90, 95, 99)}
    return PerfAnalyzerRun(address, seconds, throughput, latency_us, Counter(OK=round(throughput * seconds)))
