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
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request

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


def _owned_config(triton: str, digits_weights: tuple[int, int], tmp_path: Path, other_sticky: str | None = None) -> str:
    def variants(v1: int, v2: int) -> list[dict[str, object]]:
        return [{"name": "v1", "pool": "main", "model": "classifier", "version": "1", "weight": v1},
                {"name": "v2", "pool": "main", "model": "classifier", "version": "2", "weight": v2}]  # fmt: skip

    config = {
        "listen": "127.0.0.1:0",
        "pools": {"main": {"endpoints": [triton]}},
        "routes": {
            "digits": {"variants": variants(*digits_weights)},
            "other": {"variants": variants(100, 0), "sticky_header": other_sticky},
        },
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "rollouts": {"tick_s": 0.2, "state_file": str(tmp_path / "rollouts.json")},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }
    return yaml.safe_dump(config)


def _weights(admin: Admin, model: str) -> dict[str, int]:
    return {v.name: v.weight for v in admin.routes(model).routes[0].variants}


def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_reload_applies_what_changed_in_the_file_and_keeps_live_changes_elsewhere(
    triton: TritonCli, tmp_path: Path
) -> None:
    """Issue 27, findings 3 and 6: touching the file no longer undoes a promotion, and a flag given
    at start (--access-log) is not reported as a change that needs a restart."""
    path, log = tmp_path / "gateway.yaml", tmp_path / "gateway.log"
    path.write_text(_owned_config(triton.address, (100, 0), tmp_path))
    args = ["--config", str(path), "--access-log", str(tmp_path / "access.jsonl")]
    with running_gateway(args, log) as gateway:
        admin = Admin(gateway.admin_address)
        admin.set_weights("digits", v1=0, v2=100)  # as a finished rollout leaves it
        path.write_text(path.read_text() + "\n\n")  # touched: nothing in it changed
        assert _until(lambda: log.read_text().count("config reloaded") >= 1)
        assert _weights(admin, "digits") == {"v1": 0, "v2": 100}
        path.write_text(_owned_config(triton.address, (100, 0), tmp_path, other_sticky="x-user"))  # another route
        assert _until(lambda: log.read_text().count("config reloaded") >= 2)
        assert _weights(admin, "digits") == {"v1": 0, "v2": 100}
        path.write_text(_owned_config(triton.address, (30, 70), tmp_path, other_sticky="x-user"))  # this route
        assert _until(lambda: _weights(admin, "digits") == {"v1": 30, "v2": 70})
        trail = admin.stub.GetAudit(apb.GetAuditRequest(model="digits"), metadata=AUTH, timeout=10)
        reloads = [r for r in trail.records if r.action == "route.reload"]
        assert [(r.actor, r.reason) for r in reloads] == [("config", f"reload of {path}")]
    assert "need a restart" not in log.read_text()


def test_a_reload_does_not_change_a_route_a_rollout_owns(triton: TritonCli, tmp_path: Path) -> None:
    path, log = tmp_path / "gateway.yaml", tmp_path / "gateway.log"
    path.write_text(_owned_config(triton.address, (100, 0), tmp_path))
    with running_gateway(["--config", str(path)], log) as gateway:
        admin = Admin(gateway.admin_address)
        spec = apb.RolloutSpec(model="digits", candidate="v2", baseline="v1", steps=[20], interval_s=60)
        admin.stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
        assert _weights(admin, "digits") == {"v1": 80, "v2": 20}
        path.write_text(_owned_config(triton.address, (50, 50), tmp_path))
        assert _until(lambda: "routes.digits changed in the file while the rollout of 'v2'" in log.read_text())
        time.sleep(0.5)
        assert _weights(admin, "digits") == {"v1": 80, "v2": 20}  # refused, not put back a tick later
        admin.stub.AbortRollout(apb.RolloutCommandRequest(model="digits"), metadata=AUTH, timeout=10)
        assert _weights(admin, "digits") == {"v1": 100, "v2": 0}
        path.write_text(path.read_text() + "\n")  # the first reload after the rollout applies the change
        assert _until(lambda: _weights(admin, "digits") == {"v1": 50, "v2": 50})
