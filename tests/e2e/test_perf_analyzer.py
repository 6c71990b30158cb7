"""NVIDIA's perf_analyzer, unchanged, against the gateway: what users measure Triton with.

The binary comes from the tritonclient 2.51 wheel (`make perf-analyzer`, part of `make test`).
Through a caching gateway it must still find the model version it measured (it looks for the
statistics that grew) and report the gateway's hits as Triton would report its own cache's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.local.processes import GatewayProcess
from loadtest import perf_analyzer
from tests.procs import TritonCli, running_gateway


def _perf_analyzer(address: str, model: str, shape: str) -> str:
    if not perf_analyzer.BINARY.exists():
        pytest.fail(f"{perf_analyzer.BINARY} is missing: run `make perf-analyzer` (make test does)")
    # A fixed request count: perf_analyzer's stability search (three windows within 10%) is what
    # fails on a shared 2-core machine, and this test is about the protocol, not the numbers.
    return perf_analyzer.run(["-m", model, "-i", "grpc", "-u", address, "--shape", shape,
                              "--concurrency-range", "2", "--request-count", "500"])  # fmt: skip


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


def test_the_bench_reads_perf_analyzers_figures(gateway: GatewayProcess) -> None:
    run = perf_analyzer.measure(gateway.address, "identity", "INPUT0:16", 2, window_ms=500, connection_per_context=True)
    assert run.throughput > 0 and run.requests > 0
    assert 0 < run.percentile_ms(50) <= run.percentile_ms(99)
