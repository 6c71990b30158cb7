"""`gateway serve --workers 2`: two processes on one port, one supervisor, metrics that add up."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.localrun import GatewayProcess
from gateway.samples import digits
from tests.procs import TritonCli, running_gateway, running_redis
from tests.traffic import TOKEN, Admin, digit_request, scrape_metrics, versions_route

CONNECTIONS = 16  # SO_REUSEPORT spreads connections: all 16 on one worker happens 1 time in 32,768


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[16])
    request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    return request


def _send_over_new_connections(address: str, request: pb.ModelInferRequest, per_connection: int) -> list[str]:
    """Each connection its own (no shared subchannel); the variants that answered."""
    variants = []
    for _ in range(CONNECTIONS):
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(per_connection):
                _, call = stub.ModelInfer.with_call(request, timeout=10)
                variants.append(dict(call.trailing_metadata())["x-gateway-variant"])
    return variants


Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _by_worker(metrics: Metrics, name: str, **labels: str) -> dict[str, float]:
    wanted = set(labels.items())
    return {
        dict(key)["worker"]: value for (family, key), value in metrics.items() if family == name and wanted <= set(key)
    }


def _workers(supervisor: psutil.Process) -> list[psutil.Process]:
    return [child for child in supervisor.children() if "resource_tracker" not in " ".join(child.cmdline())]


@pytest.fixture(scope="module")
def workers(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("workers") / "gateway.log"
    with running_gateway(["--upstream", triton.address, "--workers", "2", "--metrics-port", "0"], log) as server:
        yield server


def test_requests_over_many_connections_reach_both_workers_and_metrics_add_up(workers: GatewayProcess) -> None:
    before = scrape_metrics(workers.metrics_address)
    _send_over_new_connections(workers.address, _identity(), per_connection=5)
    after = scrape_metrics(workers.metrics_address)
    labels = {"method": "ModelInfer", "model": "identity", "code": "OK"}
    served = {
        worker: count - _by_worker(before, "gateway_requests_total", **labels).get(worker, 0.0)
        for worker, count in _by_worker(after, "gateway_requests_total", **labels).items()
    }
    assert sum(served.values()) == CONNECTIONS * 5  # exact: each request counted once, by one worker
    assert sorted(served) == ["0", "1"] and all(served.values()), served
    assert _by_worker(after, "gateway_worker_up") == {"0": 1.0, "1": 1.0}
    assert after[("gateway_workers", frozenset())] == 2


def test_a_worker_that_dies_is_replaced_and_traffic_goes_on(workers: GatewayProcess) -> None:
    assert workers.process is not None
    supervisor = psutil.Process(workers.process.pid)
    victim = _workers(supervisor)[-1]
    victim.kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = scrape_metrics(workers.metrics_address)
        restarted = metrics.get(("gateway_worker_restarts_total", frozenset())) == 1
        if restarted and len(_by_worker(metrics, "gateway_worker_up")) == 2:
            break
        time.sleep(0.2)
    assert metrics[("gateway_worker_restarts_total", frozenset())] == 1
    assert victim.pid not in [child.pid for child in _workers(supervisor)] and len(_workers(supervisor)) == 2
    assert len(_send_over_new_connections(workers.address, _identity(), per_connection=1)) == CONNECTIONS


def test_sigterm_stops_every_worker(triton: TritonCli, tmp_path: Path) -> None:
    gateway = GatewayProcess(["--upstream", triton.address, "--workers", "2", "--host", "127.0.0.1", "--port", "0"])
    gateway.start()
    assert gateway.process is not None
    children = psutil.Process(gateway.process.pid).children()  # the workers, multiprocessing's helper
    assert len(_workers(psutil.Process(gateway.process.pid))) == 2
    assert gateway.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_admin_with_several_workers_needs_redis(triton: TritonCli) -> None:
    command = [sys.executable, "-m", "gateway", "serve", "--upstream", triton.address, "--workers", "2",
               "--admin-port", "0", "--admin-token", TOKEN, "--host", "127.0.0.1", "--port", "0"]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert finished.returncode == 2
    assert "--workers 2 with the admin API needs --redis" in finished.stderr


def test_a_route_changed_through_worker_0_reaches_every_worker(triton: TritonCli, tmp_path: Path) -> None:
    """The admin API lives on worker 0; the change reaches worker 1 through Redis."""
    with running_redis(tmp_path) as redis:
        args = ["--upstream", triton.address, "--workers", "2", "--redis", redis.url,
                "--admin-port", "0", "--admin-token", TOKEN]  # fmt: skip
        with running_gateway(args, tmp_path / "gateway.log") as gateway:
            admin = Admin(gateway.admin_address)
            admin.set_route(versions_route("classifier", {"1": 100, "2": 0}))
            request = digit_request(digits()["pixels"][0])
            deadline = time.monotonic() + 5
            while set(variants := _send_over_new_connections(gateway.address, request, 1)) != {"1"}:
                assert time.monotonic() < deadline, f"some worker still routes elsewhere: {variants}"
            admin.close()


def test_max_connection_age_spreads_one_long_lived_client_over_the_workers(triton: TritonCli, tmp_path: Path) -> None:
    """One channel, kept for seconds: GOAWAY every 0.3 s makes it reconnect, and the kernel picks a
    worker again each time; every request still succeeds."""
    args = ["--upstream", triton.address, "--workers", "2", "--metrics-port", "0", "--max-connection-age", "0.3"]
    with running_gateway(args, tmp_path / "gateway.log") as gateway:
        request = _identity()
        with grpc.insecure_channel(gateway.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            sent, stop = 0, time.monotonic() + 5
            while time.monotonic() < stop:
                stub.ModelInfer(request, timeout=10)
                sent += 1
        metrics = scrape_metrics(gateway.metrics_address)
    served = _by_worker(metrics, "gateway_requests_total", method="ModelInfer", code="OK")
    assert sum(served.values()) == sent
    assert sorted(served) == ["0", "1"] and all(served.values()), served
