"""Resilient pools: two real Tritons, one killed mid-load and restarted; a full outage."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import psutil
import yaml
from tritonclient.grpc import service_pb2 as pb

from gateway.local.processes import GatewayProcess, free_port
from gateway_admin import admin_pb2 as apb
from gateway_admin import admin_pb2_grpc
from tests.procs import TritonCli, running_gateway, running_triton
from tests.traffic import AUTH, TOKEN, Client


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[4])
    request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    return request


def _pool(admin_address: str) -> apb.PoolStats:
    with grpc.insecure_channel(admin_address) as channel:
        stub = admin_pb2_grpc.GatewayAdminStub(channel)
        return stub.GetPoolStats(apb.GetPoolStatsRequest(), metadata=AUTH, timeout=5).pools[0]


def _endpoint(stats: apb.PoolStats, address: str) -> apb.EndpointStats:
    return next(e for e in stats.endpoints if e.address == address)


def _until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_one_of_two_tritons_killed_mid_load(triton: TritonCli, tmp_path: Path) -> None:
    """Under steady load, SIGKILL one Triton: < 1% of requests fail, it leaves the rotation;
    restarted on the same port, it is admitted again and serves once more."""
    second_port = free_port()
    with running_triton(tmp_path / "second.log", second_port) as second:
        args = ["--upstream", triton.address, "--upstream", second.address, "--admin-port", "0", "--admin-token", TOKEN]
        with running_gateway(args, tmp_path / "gateway.log") as gateway:
            outcomes: list[bool] = []
            stop = threading.Event()

            def load() -> None:
                client = Client(gateway.address)
                while not stop.is_set():
                    try:
                        client.call(_identity())
                        outcomes.append(True)
                    except grpc.RpcError:
                        outcomes.append(False)
                client.close()

            workers = [threading.Thread(target=load) for _ in range(4)]
            for worker in workers:
                worker.start()
            restarted = TritonCli(tmp_path / "second-again.log", second_port)
            try:
                assert _until(lambda: len(outcomes) > 200, 20)
                assert _endpoint(_pool(gateway.admin_address), second.address).latency_ewma_ms > 0  # it served
                second.kill()
                assert _until(lambda: not _endpoint(_pool(gateway.admin_address), second.address).ready, 10)
                dead = _endpoint(_pool(gateway.admin_address), second.address)
                served_while_dead = len(outcomes)
                time.sleep(1.0)
                assert "triton ready" in restarted.start()
                assert _until(lambda: _endpoint(_pool(gateway.admin_address), second.address).ready, 15)
                before = _pool(gateway.admin_address).attempts
                assert _until(lambda: _pool(gateway.admin_address).attempts > before + 100, 20)
                back = _endpoint(_pool(gateway.admin_address), second.address)
            finally:
                stop.set()
                for worker in workers:
                    worker.join(30)
                if restarted.process is not None:
                    restarted.stop()
    failures = outcomes.count(False)
    assert len(outcomes) > served_while_dead > 200
    assert failures / len(outcomes) < 0.01, (failures, len(outcomes))
    assert not dead.ready and dead.outstanding == 0
    assert back.ready and not back.ejected


def test_full_outage_does_not_multiply_attempts(tmp_path: Path) -> None:
    """Both endpoints dead: every request fails UNAVAILABLE naming the pool, and the retry budget
    holds upstream attempts to (1 + 0.2) x requests + 3 initial tokens."""
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = ["--upstream", dead[0], "--upstream", dead[1], "--admin-port", "0", "--admin-token", TOKEN]
    with running_gateway(args, tmp_path / "gateway.log") as gateway:
        client = Client(gateway.address)
        codes = []
        for _ in range(100):
            try:
                client.call(_identity())
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
                assert "upstream pool 'default'" in str(exc.details())
        client.close()
        stats = _pool(gateway.admin_address)
    assert codes == ["UNAVAILABLE"] * 100
    assert 100 <= stats.attempts <= 1.2 * 100 + 3, stats
    assert stats.retries > 0 and stats.retries_denied > 0


def test_hedging_sends_a_second_attempt_when_the_first_is_slow(triton: TritonCli, tmp_path: Path) -> None:
    """Two endpoints (the same Triton twice); `slow` v1 takes 200 ms more than the 50 ms hedge delay,
    so every request is hedged, answers once, and the hedges stay within the retry budget."""
    config = {
        "listen": "127.0.0.1:0",
        "pools": {"p": {"endpoints": [triton.address, f"localhost:{triton.port}"], "hedge_delay_ms": 50,
                        "retry_budget_ratio": 1.0}},
        "default_pool": "p",
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    request = pb.ModelInferRequest(model_name="slow", model_version="1")
    request.inputs.add(name="DELAY_MS", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[1.0]], np.float32).tobytes())
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        client = Client(gateway.address)
        for _ in range(5):
            response, _ = client.call(request)
            assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [1.0]
        client.close()
        stats = _pool(gateway.admin_address)
    # 5 requests, 5 hedges, and 3 metadata calls: RepositoryIndex (discovery), ModelMetadata, ModelConfig.
    assert stats.hedges == 5 and stats.attempts == 5 + 5 + 3


def _sent_to(gateway: GatewayProcess, port: int) -> list[int]:
    """The bytes each of the gateway's established TCP connections to `port` has had acknowledged
    (its local ports from /proc, their counters from `ss`)."""
    assert gateway.process is not None
    ours = {
        c.laddr.port
        for c in psutil.Process(gateway.process.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }
    listed = subprocess.run(["ss", "-tinH", "state", "established", "dport", "=", f":{port}"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    sent = {}
    for block in re.split(r"\n(?=\S)", listed.strip()):
        local = re.search(r":(\d+)\s", block)
        acked = re.search(r"bytes_acked:(\d+)", block)
        if local and int(local.group(1)) in ours:
            sent[int(local.group(1))] = int(acked.group(1)) if acked else 0
    assert set(sent) == ours, (listed, ours)
    return sorted(sent.values())


def _at_once(address: str, request: pb.ModelInferRequest, callers: int, each: int) -> list[bool]:
    """`callers` clients calling `each` times, all at once: whether each answer echoed its input."""
    answers: list[bool] = []
    sent = request.raw_input_contents[0]

    def calls() -> None:
        client = Client(address)
        for _ in range(each):
            response, _ = client.call(request)
            answers.append(response.raw_output_contents[0] == sent)
        client.close()

    threads = [threading.Thread(target=calls) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_unary_calls_spread_over_connections_as_the_load_needs_them(triton: TritonCli, tmp_path: Path) -> None:
    """Small requests share one connection to their Triton while less than a MiB of them is under
    way (eight callers of `slow`, 100 ms each); 1 MB requests from eight callers, each on the least loaded
    connection, open more up to `connections_per_endpoint` (3), and no more; with 1, every call
    shares one. The admin API counts them as the sockets do."""
    small = pb.ModelInferRequest(model_name="slow")
    small.inputs.add(name="DELAY_MS", datatype="FP32", shape=[1, 1])
    small.raw_input_contents.append(np.array([[100.0]], np.float32).tobytes())
    values = np.arange(1 << 18, dtype=np.float32)  # 1 MiB
    large = pb.ModelInferRequest(model_name="identity")
    large.inputs.add(name="INPUT0", datatype="FP32", shape=[values.size])
    large.raw_input_contents.append(values.tobytes())
    for limit in (3, 1):
        config = {
            "listen": "127.0.0.1:0",
            "pools": {"p": {"endpoints": [triton.address], "connections_per_endpoint": limit}},
            "default_pool": "p",
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        }
        path = tmp_path / f"gateway-{limit}.yaml"
        path.write_text(yaml.safe_dump(config))
        with running_gateway(["--config", str(path)], tmp_path / f"gateway-{limit}.log") as gateway:
            assert _at_once(gateway.address, small, callers=8, each=3) == [True] * 24
            assert len(_sent_to(gateway, triton.port)) == 1
            assert _endpoint(_pool(gateway.admin_address), triton.address).connections == 1
            assert _at_once(gateway.address, large, callers=8, each=4) == [True] * 32
            sent = _sent_to(gateway, triton.port)
            # As many as allowed, each of them carrying requests (one has all 32 MiB when alone).
            assert len(sent) == limit and sent[0] >= (1 << 20) and sum(sent) >= 32 << 20, sent
            assert _endpoint(_pool(gateway.admin_address), triton.address).connections == limit
