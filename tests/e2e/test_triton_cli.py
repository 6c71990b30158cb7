"""`gateway triton` runs a real Triton; two run side by side; a failed start says why."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2

from gateway.local.processes import free_port
from gateway.local.samples import infer_inputs
from gateway.local.triton import DEFAULT_MODEL_REPOSITORY
from tests.procs import TritonCli, health_status, running_gateway, running_triton


def _wait_for_health(address: str, wanted: int, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (status := health_status(address)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return status


def test_second_instance_side_by_side_and_gateway_waits_for_it(triton: TritonCli, tmp_path: Path) -> None:
    """A gateway in front of a not-yet-started Triton is NOT_SERVING; once it is up, SERVING and working."""
    port = free_port()
    with running_gateway(["--upstream", f"127.0.0.1:{port}"], tmp_path / "gateway.log") as gateway:
        assert health_status(gateway.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        with running_triton(tmp_path / "second.log", port) as second:
            assert f"grpc 127.0.0.1:{port}" in second.ready_line and "models" in second.ready_line
            assert _wait_for_health(gateway.address, health_pb2.HealthCheckResponse.SERVING) == 1
            for address in (triton.address, second.address, gateway.address):
                with grpcclient.InferenceServerClient(address) as client:
                    result = client.infer("identity", infer_inputs({"INPUT0": np.arange(3, dtype=np.float32)}))
                    assert result.as_numpy("OUTPUT0").tolist() == [0.0, 1.0, 2.0]
        assert second.process is not None and second.process.returncode == 0
        assert _wait_for_health(gateway.address, health_pb2.HealthCheckResponse.NOT_SERVING) == 2


def test_start_failure_exits_nonzero_with_a_message(triton: TritonCli, tmp_path: Path) -> None:
    """Asking for the port the session's Triton holds: the command says so and exits non-zero."""
    command = [sys.executable, "-m", "gateway", "triton", "--grpc-port", str(triton.port)]
    done = subprocess.run(
        [*command, "--log-file", str(tmp_path / "t.log")], capture_output=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert b"Triton could not start" in done.stderr
    assert f"127.0.0.1:{triton.port} is not free".encode() in done.stderr


def test_missing_model_repository_is_reported(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "gateway", "triton", "--grpc-port", str(free_port())]
    done = subprocess.run(
        [*command, "--model-repository", str(tmp_path / "none")], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert b"is not a directory" in done.stderr


def test_one_ready_line_and_triton_s_log_apart_unless_verbose(tmp_path: Path) -> None:
    """Issue 27, finding 10: `gateway triton` printed Triton's whole log; now one line naming
    where that log is (a temporary file without --log-file), and the log itself with --verbose."""
    repository = tmp_path / "models"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "identity", repository / "identity")
    for extra in ([], ["--verbose"]):
        command = [sys.executable, "-m", "gateway", "triton", "--grpc-port", str(free_port()),
                   "--model-repository", str(repository), *extra]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None
        ready = process.stdout.readline()
        address = ready.partition("(grpc ")[2].partition(")")[0]
        with grpcclient.InferenceServerClient(address) as client:  # serving before it is stopped
            result = client.infer("identity", infer_inputs({"INPUT0": np.ones(2, np.float32)}))
            assert result.as_numpy("OUTPUT0").tolist() == [1.0, 1.0]
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=60)
        assert "triton ready" in ready and " with 1 models " in ready, ready + errors
        if extra:
            assert "its log" not in ready and "Started GRPCInferenceService" in errors
        else:
            assert "its log: " in ready and not rest.strip() and not errors.strip(), errors
