"""A local, real Triton: the `tritonserver` bundled in the nvidia-pytriton wheel, run directly.

The wheel lives in its own venv (`.venv-triton`, made from Debian's /usr/bin/python3.11 because
the Python-backend stub links the system libpython3.11, and pinned to numpy<2). The binary needs
the wheel's bundled libraries on LD_LIBRARY_PATH and that venv's `bin` first on PATH, so the
backend stub finds a Python with numpy. Several instances can run side by side: each gets its own
ports and its own shared-memory prefix for the Python backend.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

__all__ = ["DEFAULT_MODEL_REPOSITORY", "TritonInstall", "TritonLaunchError", "TritonOptions", "TritonProcess"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "deploy" / "models"
_STUB = "triton_python_backend_stub"


class TritonLaunchError(Exception):
    """Triton is not installed, or did not become ready; the message says what to do."""


@dataclass(frozen=True)
class TritonInstall:
    venv: Path

    @classmethod
    def find(cls, venv: Path | None = None) -> TritonInstall:
        venv = venv or Path(os.environ.get("GATEWAY_TRITON_VENV", REPO_ROOT / ".venv-triton"))
        install = cls(venv)
        if not install.binary.is_file():
            raise TritonLaunchError(f"no tritonserver under {venv}: create it with `make triton-venv`")
        return install

    @property
    def site_packages(self) -> Path:
        found = sorted(self.venv.glob("lib/python3.*/site-packages"))
        if not found:
            raise TritonLaunchError(f"{self.venv} is not a Python venv: create it with `make triton-venv`")
        return found[0]

    @property
    def server_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.server_dir / "backends"

    @property
    def caches(self) -> Path:
        """Triton's response-cache implementations (`--cache-config local,size=...`)."""
        return self.server_dir / "caches"

    def prepare(self) -> None:
        """Put the Python-backend stub matching the venv's Python where the backend looks for it."""
        stub = self.backends / "python" / _STUB
        if not stub.exists():
            version = self.site_packages.parent.name.removeprefix("python")
            shutil.copy2(self.server_dir / "python_backend_stubs" / version / _STUB, stub)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = str(self.site_packages / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs, env.get("LD_LIBRARY_PATH")]))
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), env.get("PATH", "")])
        return env


@dataclass(frozen=True)
class TritonOptions:
    grpc_port: int
    http_port: int | None = None
    metrics_port: int | None = None
    address: str = "127.0.0.1"
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    exit_timeout_s: int = 5
    extra_args: tuple[str, ...] = ()

    @property
    def grpc_target(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def arguments(self, install: TritonInstall) -> list[str]:
        args = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={install.backends}",
            f"--cache-directory={install.caches}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name=gw_triton_{self.grpc_port}_",
        ]
        if self.http_port is None:
            args.append("--allow-http=false")
        else:
            args += [f"--http-address={self.address}", f"--http-port={self.http_port}"]
        if self.metrics_port is None:
            args.append("--allow-metrics=false")
        else:
            args += [f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}"]
        return args + list(self.extra_args)


def _check_port_free(address: str, port: int) -> None:
    with socket.socket() as probe:
        # As Triton binds: connections of a previous server on this port lingering in TIME_WAIT
        # do not count, only a socket listening on it does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise TritonLaunchError(f"{address}:{port} is not free ({exc.strerror}): choose another port") from exc


class TritonProcess:
    """One tritonserver child process."""

    def __init__(self, options: TritonOptions, install: TritonInstall | None = None) -> None:
        self.options = options
        self.install = install or TritonInstall.find()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log: IO[bytes] | int | None = None) -> None:
        if not self.options.model_repository.is_dir():
            raise TritonLaunchError(f"model repository {self.options.model_repository} is not a directory")
        # Checked up front: Triton binds only after loading every model, and meanwhile the readiness
        # probe would be answered by whatever server already holds the port.
        for port in filter(None, (self.options.grpc_port, self.options.http_port, self.options.metrics_port)):
            _check_port_free(self.options.address, port)
        self.install.prepare()
        self.process = subprocess.Popen(
            self.options.arguments(self.install),
            env=self.install.environment(),
            stdout=log if log is not None else sys.stderr,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> int:
        """Block until Triton reports ready; the number of models it serves."""
        assert self.process is not None, "start() first"
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.options.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if (code := self.process.poll()) is not None:
                    raise TritonLaunchError(f"tritonserver exited with code {code} before it was ready")
                try:
                    if stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1).ready:
                        index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True), timeout=5)
                        return len(index.models)
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise TritonLaunchError(f"tritonserver was not ready on {self.options.grpc_target} after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
