"""Drift through a real gateway and Triton: digits as they are, then shifted;
the retraining webhook reaches a test HTTP server once per cooldown."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from gateway.local.redis_server import running_redis
from gateway.local.samples import digits
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request


class _Retrain(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["idempotency_header"] = self.headers.get("Idempotency-Key")
        type(self).calls.append(body)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def retrain_hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Retrain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/retrain"
    finally:
        server.shutdown()
        server.server_close()


def _gateway(triton: TritonCli, tmp_path: Path, hook: str, redis_url: str | None = None, name: str = "gateway") -> Any:
    variants = [{"name": "1", "pool": "main", "model": "classifier", "version": "1", "weight": 100}]
    config = {
        "pools": {"main": {"endpoints": [triton.address]}},
        "routes": {"classifier": {"variants": variants}},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "drift": {"enabled": True, "sample": 1.0, "reference_samples": 150, "window_samples": 60, "consecutive": 2,
                  "webhook": {"url": hook, "cooldown_s": 3600}, "reference_dir": str(tmp_path / "references")},
    }  # fmt: skip
    if redis_url is not None:
        config["shared"] = {"redis_url": redis_url}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return running_gateway(["--config", str(path)], tmp_path / f"{name}.log")


def _drift(admin: Admin) -> apb.GetDriftResponse:
    return admin.stub.GetDrift(apb.GetDriftRequest(model="classifier"), metadata=AUTH, timeout=10)


def _until(admin: Admin, done: Any, timeout_s: float = 15.0) -> apb.GetDriftResponse:
    deadline = time.monotonic() + timeout_s
    while not done(answer := _drift(admin)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done(answer), answer
    return answer


def test_shifted_inputs_raise_the_alert_and_the_webhook_fires_once_per_cooldown(
    triton: TritonCli, tmp_path: Path, retrain_hook: str
) -> None:
    pixels = digits()["pixels"].astype(np.float32)
    with _gateway(triton, tmp_path, retrain_hook) as gateway:
        client, admin = Client(gateway.address), Admin(gateway.admin_address)
        for row in pixels[:150]:  # the reference: version 1's first 150 requests
            client.call(digit_request(row))
        frozen = _until(admin, lambda d: d.reference_source != "")
        assert frozen.reference_samples == 150 and "variant 1" in frozen.reference_source
        for row in pixels[150:210]:  # a window like the reference
            client.call(digit_request(row))
        calm = _until(admin, lambda d: d.variants and d.variants[0].windows >= 1)
        assert not calm.variants[0].drifted and calm.variants[0].consecutive == 0
        shifted = np.clip(pixels[:240] * 0.3 + 9.0, 0, 16)  # washed-out, brighter digits
        for row in shifted:  # four drifted windows: the alert after two, the cooldown holds the rest
            client.call(digit_request(row))
        alerted = _until(admin, lambda d: d.variants[0].windows >= 5 and d.triggers_fired >= 1)
        variant = alerted.variants[0]
        assert variant.drifted and variant.consecutive == 4 and variant.drifted_share >= 0.5
        assert variant.features[0].drifted and variant.features[0].psi >= variant.features[-1].psi
        assert alerted.triggers_skipped >= 1
        ctl = [str(Path(sys.executable).parent / "gatewayctl"), "--admin", gateway.admin_address, "--token", TOKEN]
        shown = subprocess.run([*ctl, "drift", "classifier"], capture_output=True, text=True, check=False,
                               env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        assert shown.returncode == 0 and "variant 1: DRIFTED" in shown.stdout, shown.stderr
        assert variant.features[0].feature in shown.stdout
        client.close()
    assert len(_Retrain.calls) == 1
    call = _Retrain.calls[0]
    assert (call["model"], call["variant"], call["consecutive"]) == ("classifier", "1", 2)
    assert call["idempotency_header"] == call["idempotency_key"] and call["thresholds"]["psi_alert"] == 0.25
    audited = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(r["action"] == "drift.retrain" and r["after"]["ok"] for r in audited)


def test_an_uploaded_reference_replaces_the_frozen_one(triton: TritonCli, tmp_path: Path, retrain_hook: str) -> None:
    with _gateway(triton, tmp_path, retrain_hook) as gateway:
        admin = Admin(gateway.admin_address)
        buffer = io.BytesIO()
        np.savez(buffer, INPUT0=digits()["pixels"].astype(np.float32))
        answer = admin.stub.SetDriftReference(apb.SetDriftReferenceRequest(model="classifier", npz=buffer.getvalue()),
                                              metadata=AUTH, timeout=10)  # fmt: skip
        assert (answer.reference_source, answer.reference_samples) == ("uploaded", 300)
        with pytest.raises(Exception) as bad:
            admin.stub.SetDriftReference(apb.SetDriftReferenceRequest(model="classifier", npz=b"not npz"),
                                         metadata=AUTH, timeout=10)  # fmt: skip
        assert "not a usable .npz" in str(bad.value)
    with _gateway(triton, tmp_path, retrain_hook) as gateway:  # restarted: the uploaded reference is still there
        answer = _drift(Admin(gateway.admin_address))
        assert (answer.reference_source, answer.reference_samples) == ("uploaded", 300)


def test_replicas_sharing_redis_judge_one_window_and_fire_one_trigger(
    triton: TritonCli, tmp_path: Path, retrain_hook: str
) -> None:
    """Requests spread over two replicas: half the traffic each, yet the windows fill as one."""
    _Retrain.calls.clear()
    pixels = digits()["pixels"].astype(np.float32)
    shifted = np.clip(pixels[:240] * 0.3 + 9.0, 0, 16)
    with (
        running_redis(tmp_path) as redis,
        _gateway(triton, tmp_path, retrain_hook, redis.url, "a") as first,
        _gateway(triton, tmp_path, retrain_hook, redis.url, "b") as second,
    ):
        clients = [Client(first.address), Client(second.address)]
        admins = [Admin(first.admin_address), Admin(second.admin_address)]

        def spread(rows: np.ndarray) -> None:
            for index, row in enumerate(rows):
                clients[index % 2].call(digit_request(row))

        spread(pixels[:150])  # 75 each: one reference of 150, frozen once
        for admin in admins:
            frozen = _until(admin, lambda d: d.reference_source != "")
            assert frozen.reference_samples >= 150 and "variant 1" in frozen.reference_source
        spread(pixels[150:210])  # 30 each: one calm window of 60 (each replica alone would have none)
        calm = _until(admins[1], lambda d: bool(d.variants) and d.variants[0].windows >= 1)
        assert not calm.variants[0].drifted and calm.variants[0].last_samples >= 60
        spread(shifted)  # four drifted windows between them: one alert, one trigger, the rest in cooldown
        for admin in admins:
            seen = _until(admin, lambda d: d.variants[0].windows >= 5 and d.triggers_fired >= 1)
            assert seen.variants[0].drifted and seen.variants[0].consecutive >= 3 and seen.triggers_skipped >= 1
        for client in clients:
            client.close()
    assert len(_Retrain.calls) == 1
    assert (_Retrain.calls[0]["model"], _Retrain.calls[0]["consecutive"]) == ("classifier", 2)
