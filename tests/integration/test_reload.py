"""Routes from a config file: hot reload (file change, SIGHUP), rejection of bad files, the discrepancy log."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from gateway.local.processes import GatewayProcess
from gateway.local.samples import digits
from tests.procs import TritonCli, running_gateway
from tests.traffic import Client, digit_request

PIXELS = digits()["pixels"]


def _config(triton: str, log: Path, v1: int, v2: int, pool: str = "main") -> str:
    variants = [
        {"name": "v1", "pool": pool, "model": "classifier", "version": "1", "weight": v1},
        {"name": "v2", "pool": pool, "model": "classifier", "version": "2", "weight": v2},
    ]
    config = {
        "listen": "127.0.0.1:0",
        "pools": {"main": {"endpoints": [triton]}},
        "routes": {"digits": {"variants": variants, "shadows": [{"variant": "v2", "fraction": 1.0}]}},
        "shadow": {"log_path": str(log), "log_tensors": True},
    }
    return yaml.safe_dump(config)


@pytest.fixture
def configured(triton: TritonCli, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path, Callable[..., None]]]:
    path = tmp_path / "gateway.yaml"
    log = tmp_path / "discrepancies.jsonl"

    def write(v1: int, v2: int, pool: str = "main") -> None:
        path.write_text(_config(triton.address, log, v1, v2, pool))

    write(100, 0)
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        yield gateway, tmp_path, write


def _variants_within(client: Client, wanted: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.infer(digit_request(PIXELS[0], "digits"))[1] == wanted:
            return True
        time.sleep(0.05)
    return False


def test_file_change_is_applied_and_a_bad_file_is_rejected(
    configured: tuple[GatewayProcess, Path, Callable[..., None]],
) -> None:
    gateway, workdir, write = configured
    client = Client(gateway.address)
    assert client.infer(digit_request(PIXELS[0], "digits"))[1] == "v1"
    write(0, 100)
    assert _variants_within(client, "v2", 5.0)
    write(100, 0, pool="nowhere")
    time.sleep(2.5)  # two polls of the file
    assert {client.infer(digit_request(PIXELS[0], "digits"))[1] for _ in range(10)} == {"v2"}
    log = (workdir / "gateway.log").read_text()
    assert "config reload rejected" in log and "routes.digits.variants.0.pool: unknown pool 'nowhere'" in log
    client.close()


def test_sighup_reloads(configured: tuple[GatewayProcess, Path, Callable[..., None]]) -> None:
    gateway, _, write = configured
    client = Client(gateway.address)
    write(0, 100)
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGHUP)
    assert _variants_within(client, "v2", 5.0)
    client.close()


def test_discrepancy_log_lines_are_json_with_request_ids(
    configured: tuple[GatewayProcess, Path, Callable[..., None]],
) -> None:
    gateway, workdir, _ = configured
    client = Client(gateway.address)
    for index, pixels in enumerate(PIXELS[:20]):
        request = digit_request(pixels, "digits")
        request.id = f"req-{index}"
        client.infer(request)
    client.close()
    log = workdir / "discrepancies.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 20):
        time.sleep(0.1)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(line["request_id"] for line in lines) == sorted(f"req-{i}" for i in range(20))
    first = lines[0]
    assert (first["model"], first["primary"], first["shadow"]) == ("digits", "v1", "v2")
    assert set(first["tensors"]) == {"LOGITS", "CLASS"} and len(first["primary_outputs"]["LOGITS"][0]) == 10
    disagreeing = {line["request_id"] for line in lines if line["argmax_disagrees"]}
    expected = {f"req-{i}" for i in range(20) if digits()["class_v1"][i] != digits()["class_v2"][i]}
    assert disagreeing == expected
