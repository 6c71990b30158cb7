"""Local processes for the demo and the tests: free ports and a `gateway serve` child."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["GatewayProcess", "free_port"]

_SERVING = re.compile(rb"gateway serving on (\S+):(\d+)")
_ADMIN = re.compile(rb"admin on (\S+):(\d+)")
_METRICS = re.compile(rb"metrics on (\S+):(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GatewayProcess:
    """`gateway serve ARGS --host 127.0.0.1 --port 0` as a child; `address` once it serves."""

    def __init__(self, args: list[str], log_path: Path | None = None, wrapper: Sequence[str] = ()) -> None:
        """`wrapper`: a command the gateway runs under (a profiler's, say)."""
        self.args = args
        self.wrapper = list(wrapper)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.admin_address = ""
        self.metrics_address = ""
        self._terminated = False

    def start(self) -> str:
        with self.log_path.open("ab") if self.log_path else open(os.devnull, "wb") as stderr:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "gateway", "serve", *self.args],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = _SERVING.search(line)
        if match is None:
            code = self.process.wait()
            raise RuntimeError(f"gateway exited with code {code} before serving (log: {self.log_path})")
        self.address = f"127.0.0.1:{int(match.group(2))}"
        if admin := _ADMIN.search(line):
            self.admin_address = f"127.0.0.1:{int(admin.group(2))}"
        if metrics := _METRICS.search(line):
            self.metrics_address = f"127.0.0.1:{int(metrics.group(2))}"
        return self.address

    @contextlib.contextmanager
    def serving(self) -> Iterator[tuple[str, int]]:
        """Started until the block ends (then stopped): its data address and its PID."""
        self.start()
        try:
            assert self.process is not None
            yield self.address, self.process.pid
        finally:
            self.stop()

    def terminate(self) -> None:
        """SIGTERM once: a second signal during the drain would find the handlers gone at exit."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process is None:
            return 0
        self.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
