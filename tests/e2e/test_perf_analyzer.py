"""NVIDIA's perf_analyzer, unchanged, against the gateway: what users measure Triton with.

The binary comes from the tritonclient 2.51 wheel (`make perf-analyzer`, part of `make test`).
Through a caching gateway it must still find the model version it measured (it looks for the
statistics that grew) and report the gateway's hits as Triton would report its own cache's.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.localrun import GatewayProcess
from tests.procs import TritonCli, running_gateway

TOOL = Path(__file__).resolve().parents[2] / ".tools" / "perf_analyzer"
BINARY = TOOL / "bin" / "perf_analyzer"


def _perf_analyzer(address: str, model: str, shape: str) -> str:
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: run `make perf-analyzer` (make test does)")
    environment = os.environ | {"LD_LIBRARY_PATH": str(TOOL / "nvidia" / "cuda_runtime" / "lib")}
    # A fixed request count: perf_analyzer's stability search (three windows within 10%) is what
    # fails on a shared 2-core machine, and this test is about the protocol, not the numbers.
    command = [str(BINARY), "-m", model, "-i", "grpc", "-u", address, "--shape", shape,
               "--concurrency-range", "2", "--request-count", "500"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def cached(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("perf-analyzer") / "gateway.log"
    with running_gateway(["--upstream", triton.address, "--cache", "--batching"], log) as gateway:
        yield gateway


def test_perf_analyzer_measures_through_the_gateway(gateway: GatewayProcess) -> None:
    out = _perf_analyzer(gateway.address, "identity", "INPUT0:16")
    assert "Concurrency: 2, throughput:" in out and "Inference count:" in out


def test_perf_analyzer_sees_the_gateways_cache_hits(cached: GatewayProcess) -> None:
    out = _perf_analyzer(cached.address, "identity_batched", "INPUT0:16")
    hits = next(line for line in out.splitlines() if "Cache hit count:" in line)
    assert int(hits.split(":")[1]) > 0
    assert "Concurrency: 2, throughput:" in out
