"""Test helpers: real Triton and gateway processes on ephemeral 127.0.0.1 ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from gateway.local.processes import GatewayProcess, free_port


class TritonCli:
    """`gateway triton --grpc-port P` as a child process, exactly as an operator runs it."""

    def __init__(self, log_path: Path, grpc_port: int | None = None, host: str = "127.0.0.1",
                 model_repository: Path | None = None) -> None:  # fmt: skip
        self.port = grpc_port or free_port()
        self.host = host
        self.model_repository = model_repository
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_line = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> str:
        """Start and wait for the ready line; '' with the process ended if Triton failed."""
        command = [sys.executable, "-m", "gateway", "triton", "--grpc-port", str(self.port), "--address", self.host]
        if self.model_repository is not None:
            command += ["--model-repository", str(self.model_repository)]
        self.process = subprocess.Popen(
            [*command, "--log-file", str(self.log_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: `kill` takes tritonserver and its stubs too
        )
        assert self.process.stdout is not None
        self.ready_line = self.process.stdout.readline().decode()
        return self.ready_line

    def kill(self) -> None:
        """Abrupt death of the whole server (no drain), as when a node is lost."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code


@contextmanager
def running_triton(log_path: Path, grpc_port: int | None = None, host: str = "127.0.0.1",
                   model_repository: Path | None = None) -> Iterator[TritonCli]:  # fmt: skip
    triton = TritonCli(log_path, grpc_port, host, model_repository)
    line = triton.start()
    try:
        assert "triton ready" in line, f"Triton did not start: {line!r}; log: {log_path}"
        yield triton
    finally:
        triton.stop()


@contextmanager
def running_gateway(args: list[str], log_path: Path) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess([*args, "--host", "127.0.0.1", "--port", "0"], log_path)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


MLSERVER = Path(__file__).resolve().parents[1] / ".venv-mlserver" / "bin" / "mlserver"
MLSERVER_MODELS = Path(__file__).resolve().parent / "mlserver"


@contextmanager
def running_mlserver(workdir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Seldon's MLServer (its own venv, `make mlserver-venv`) on free 127.0.0.1 ports, serving the
    models of tests/mlserver; yields its gRPC address once it answers ServerReady."""
    if not MLSERVER.exists():
        raise RuntimeError(f"no MLServer at {MLSERVER}: run `make mlserver-venv`")
    folder = workdir / "mlserver"
    shutil.copytree(MLSERVER_MODELS, folder)
    grpc_port = free_port()
    settings = {"host": "127.0.0.1", "http_port": free_port(), "grpc_port": grpc_port, "metrics_port": free_port(),
                "parallel_workers": 0}  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    with (workdir / "mlserver.log").open("ab") as log:
        process = subprocess.Popen([str(MLSERVER), "start", str(folder)], cwd=folder, stdout=log, stderr=log)
    address = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"MLServer exited with {process.returncode}: {workdir / 'mlserver.log'}")
                try:
                    if stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=1).ready:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"MLServer not ready after {timeout_s:.0f}s: {workdir / 'mlserver.log'}")
                time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def dnsmasq_command(hosts: Path, address: str, port: int) -> list[str]:
    """Debian's dnsmasq in the foreground on address:port, answering only from `hosts` (re-read on
    SIGHUP): no upstream servers, no /etc/hosts, TTL 0."""
    return [shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
            "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", f"--listen-address={address}", "--bind-interfaces",
            f"--port={port}", "--local-ttl=0", "--user=root", "--pid-file=", "--log-facility=-"]  # fmt: skip


class DnsServer:
    """Debian's dnsmasq on a free 127.0.0.1 port, answering from a hosts file the test rewrites
    (`serve`: name -> addresses; re-read on SIGHUP) and nothing else (no upstream, no /etc/hosts)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.hosts = workdir / "dns-hosts"
        self.hosts.write_text("")
        self.log = workdir / "dnsmasq.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = dnsmasq_command(self.hosts, "127.0.0.1", self.port)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def serve(self, names: dict[str, list[str]]) -> None:
        self.hosts.write_text("".join(f"{ip} {name}\n" for name, ips in names.items() for ip in ips))
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)  # dnsmasq re-reads its hosts files

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _answers(port: int) -> bool:
    """Whether something answers DNS on 127.0.0.1:port (a query for "." type A)."""
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(0.2)
        try:
            udp.sendto(query, ("127.0.0.1", port))
            return udp.recv(512)[:2] == b"\x12\x34"
        except OSError:
            return False


@contextmanager
def running_dns(workdir: Path) -> Iterator[DnsServer]:
    server = DnsServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
