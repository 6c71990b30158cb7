"""Prometheus metrics and the access log, after a known workload through a real gateway."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb

from gateway.local.processes import GatewayProcess
from tests.procs import TritonCli, running_gateway
from tests.traffic import Client, sample_value, scrape_metrics


@pytest.fixture
def observed(triton: TritonCli, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    access_log = tmp_path / "access.jsonl"
    args = ["--upstream", triton.address, "--metrics-port", "0", "--access-log", str(access_log), "--cache"]
    with running_gateway(args, tmp_path / "gateway.log") as gateway:
        yield gateway, access_log


def _request(model: str, **inputs: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype="BOOL" if array.dtype == np.bool_ else "FP32", shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def _workload(client: Client) -> list[str]:
    """5 identity (1 miss then 4 hits), 2 flaky failures, 1 unknown model; the request ids used."""
    ids = []
    identity = _request("identity", INPUT0=np.arange(4, dtype=np.float32))
    for index in range(5):
        ids.append(f"ok-{index}")
        _, trailing = client.call(identity, x_request_id=ids[-1])
        assert trailing["x-request-id"] == ids[-1]
    failing = _request("flaky", INPUT0=np.zeros(2, np.float32), FAIL=np.array([True]))
    for index in range(2):
        ids.append(f"fail-{index}")
        with pytest.raises(grpc.RpcError) as caught:
            client.call(failing, x_request_id=ids[-1])
        error_trailing = {item.key: str(item.value) for item in caught.value.trailing_metadata()}
        assert error_trailing["x-request-id"] == ids[-1]
    ids.append("unknown")
    with pytest.raises(grpc.RpcError):
        client.call(_request("nope", INPUT0=np.zeros(1, np.float32)), x_request_id="unknown")
    return ids


def test_metrics_count_the_workload_exactly(observed: tuple[GatewayProcess, Path]) -> None:
    gateway, _ = observed
    client = Client(gateway.address)
    _workload(client)
    client.close()
    metrics = scrape_metrics(gateway.metrics_address)

    def value(name: str, **labels: str) -> float:
        return sample_value(metrics, name, **labels)

    infer = {"method": "ModelInfer"}
    assert value("gateway_requests_total", **infer, model="identity", variant="1", code="OK") == 5
    assert value("gateway_requests_total", **infer, model="flaky", variant="1", code="INTERNAL") == 2
    assert value("gateway_requests_total", **infer, model="", variant="", code="NOT_FOUND") == 1
    assert value("gateway_request_duration_seconds_count", **infer, model="identity", variant="1") == 5
    assert value("gateway_request_duration_seconds_bucket", **infer, model="identity", variant="1", le="10.0") == 5
    assert value("gateway_cache_lookups_total", model="identity", result="hit-l1") == 4
    assert value("gateway_cache_lookups_total", model="identity", result="miss") == 1
    assert value("gateway_upstream_duration_seconds_count", pool="default", model="identity", variant="1") == 1
    # 3 inference calls (1 identity miss, 2 flaky) + 7 metadata calls: discovery of 3 models
    # (RepositoryIndex) and the signatures of the 2 that exist (ModelMetadata + ModelConfig).
    assert value("gateway_pool_attempts_total", pool="default") == 10, {
        k: v for k, v in metrics.items() if k[0].startswith("gateway_pool")
    }
    # A gauge of the periodic probe (1 s timeout): on a starved machine one probe may time out.
    deadline = time.monotonic() + 10
    while value("gateway_upstream_ready", pool="default", endpoint=gateway.args[1]) != 1:
        assert time.monotonic() < deadline, "the endpoint never showed as ready"
        time.sleep(0.2)
        metrics = scrape_metrics(gateway.metrics_address)


def test_access_log_lines_reconcile_with_the_workload(observed: tuple[GatewayProcess, Path]) -> None:
    gateway, access_log = observed
    client = Client(gateway.address)
    ids = _workload(client)
    client.close()
    deadline = time.monotonic() + 5  # written by a background thread
    while time.monotonic() < deadline and len(access_log.read_text().splitlines()) < len(ids):
        time.sleep(0.05)
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    assert sorted(by_id) == sorted(ids)
    assert [by_id[f"ok-{i}"]["cache"] for i in range(5)] == ["miss"] + ["hit-l1"] * 4
    assert {by_id[f"fail-{i}"]["code"] for i in range(2)} == {"INTERNAL"}
    assert by_id["unknown"]["code"] == "NOT_FOUND"
    ok = by_id["ok-0"]
    assert (ok["model"], ok["variant"], ok["method"], ok["retries"]) == ("identity", "1", "ModelInfer", 0)
    assert ok["bytes_in"] > 0 and ok["bytes_out"] > 0 and ok["latency_ms"] > 0 and len(ok["trace_id"]) in (0, 32)


def test_a_request_id_is_made_when_the_caller_has_none(observed: tuple[GatewayProcess, Path]) -> None:
    gateway, _ = observed
    client = Client(gateway.address)
    _, trailing = client.call(_request("identity", INPUT0=np.zeros(2, np.float32)))
    client.close()
    assert len(trailing["x-request-id"]) == 32


def test_payload_log_keeps_replayable_requests_and_responses(triton: TritonCli, tmp_path: Path) -> None:
    payloads = tmp_path / "payloads.jsonl"
    config = {
        "listen": "127.0.0.1:0", "pools": {"main": {"endpoints": [triton.address]}}, "default_pool": "main",
        "telemetry": {"payload_log": {"path": str(payloads), "fraction": 1.0}},
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    sent = _request("identity", INPUT0=np.arange(3, dtype=np.float32))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        client = Client(gateway.address)
        for index in range(3):
            client.call(sent, x_request_id=f"p-{index}")
        client.close()
    lines = [json.loads(line) for line in payloads.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["p-0", "p-1", "p-2"]
    assert pb.ModelInferRequest.FromString(base64.b64decode(lines[0]["request"])) == sent
    response = pb.ModelInferResponse.FromString(base64.b64decode(lines[0]["response"]))
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [0.0, 1.0, 2.0]


def test_the_metrics_listener_binds_the_host_it_is_given(observed: tuple[GatewayProcess, Path]) -> None:
    """`--host 127.0.0.1` (as every test gateway is started) puts /metrics on 127.0.0.1 too,
    not 0.0.0.0 (issue 27, finding 8)."""
    gateway, _ = observed
    assert gateway.process is not None
    port = int(gateway.metrics_address.rpartition(":")[2])
    listening = {c.laddr.ip for c in psutil.Process(gateway.process.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port}  # fmt: skip
    assert listening == {"127.0.0.1"}
