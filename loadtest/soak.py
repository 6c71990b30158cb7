"""`gateway soak`: a long mixed run through the gateway, watching its memory (RSS) for growth.

A real Triton and a gateway with the cache and micro-batching on; an open-loop Poisson mix of
small, large (602 KB), BYTES, batched and cache-hitting requests for `minutes`; the gateway's RSS
sampled every few seconds. Growth: from the median RSS of the second minute
(caches, pools and allocator arenas filled by then) to the median of the last minute. Results:
JSON and a PNG of RSS over time.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import TritonOptions, TritonProcess
from loadtest.plot import plot_rss
from loadtest.process_usage import rss_bytes
from loadtest.report import write_json
from loadtest.runner import run_scenario
from loadtest.scenario import RequestMix, Scenario, TensorSpec

__all__ = ["rss_growth", "run_soak", "soak_scenario"]

SAMPLE_EVERY_S = 5.0
SETTLED_AFTER_S = 60.0


def soak_scenario(target: str, minutes: float, rate: float) -> Scenario:
    fresh = {"cache-control": "no-cache, no-store"}  # past the cache: upstream (and batching) every time

    def mix(model: str, shape: list[int], weight: float, keys: int, datatype: str = "FP32", **extra: str) -> RequestMix:
        inputs = {"INPUT0": TensorSpec(datatype=datatype, shape=shape)}  # type: ignore[arg-type]
        return RequestMix(model=model, inputs=inputs, weight=weight, keys=keys, metadata=extra)

    return Scenario(
        name=f"soak {minutes:g} min", target=target, mode="open", rate=rate, arrivals="poisson",
        duration_s=minutes * 60, warmup_s=0, timeout_s=30,
        requests=[
            # Cached kinds use key spaces the cache fills in the first minute: later growth is not
            # the cache. The others bypass it, so the upstream, batching and large-payload paths
            # run for the whole soak.
            mix("identity", [16], 2, 500), mix("identity", [16], 2, 1),
            mix("identity", [16], 3, 100_000, **fresh), mix("heavy", [1, 16], 3, 10_000, **fresh),
            mix("identity_batched", [1, 16], 2, 10_000, **fresh), mix("image", [1, 3, 224, 224], 0.5, 8, **fresh),
            mix("text", [3], 1, 1_000, "BYTES", **fresh),
        ],
    )  # fmt: skip


def _sample(process: psutil.Process, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    started = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - started, rss_bytes(process)))
        stop.wait(SAMPLE_EVERY_S)


def rss_growth(samples: list[tuple[float, int]], window_s: float = 60.0) -> tuple[float, float, float]:
    """(settled RSS, final RSS, growth): the medians of the samples in the minute after the first
    one and in the last minute, so that a transient spike or dip (a 602 KB request in flight, a
    heap trim) in a single sample does not pass for growth or hide it."""
    end = samples[-1][0]
    settled = [rss for seconds, rss in samples if SETTLED_AFTER_S <= seconds < SETTLED_AFTER_S + window_s]
    last = [rss for seconds, rss in samples if seconds > end - window_s]
    before, after = float(statistics.median(settled or [samples[0][1]])), float(statistics.median(last))
    return before, after, (after - before) / before


def run_soak(out: Path, minutes: float = 10.0, rate: float = 300.0, workers: int = 1) -> int:
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    args = ["--upstream", triton.options.grpc_target, "--host", "127.0.0.1", "--port", "0", "--cache", "--batching",
            "--log-level", "WARNING", "--workers", str(workers)]  # fmt: skip
    gateway = GatewayProcess(args, workdir / "gateway.log")
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        triton.wait_ready()
        gateway.start()
        assert gateway.process is not None
        sampler = threading.Thread(target=_sample, args=(psutil.Process(gateway.process.pid), samples, stop))
        sampler.start()
        console.print(f"soak: {minutes:g} min at {rate:g} requests/s through {gateway.address}, RSS every 5 s")
        result = asyncio.run(run_scenario(soak_scenario(gateway.address, minutes, rate)))
        stop.set()
        sampler.join()
    finally:
        stop.set()
        gateway.stop()
        triton.stop()
    settled, final, growth = rss_growth(samples)
    summary = {
        **result.summary(), "workers": workers, "rss_settled_mib": round(settled / 2**20, 1),
        "rss_final_mib": round(final / 2**20, 1), "rss_max_mib": round(max(r for _, r in samples) / 2**20, 1),
        "rss_growth_after_first_minute": round(growth, 4),
    }  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_json(out / f"soak-{stamp}.json", {"summary": summary, "rss_samples": samples})
    plot_rss(samples, f"soak: RSS growth after the first minute {growth:+.1%}", out / f"soak-{stamp}.png")
    console.print(summary)
    console.print(f"results in {out}/soak-{stamp}.json and .png")
    return 0
