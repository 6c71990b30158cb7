"""Debian's nginx as a gRPC proxy (`grpc_pass`, one worker): the native-proxy yardstick of the
bench. A config of its own in a temporary folder, listening on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from gateway.local.processes import free_port

__all__ = ["BINARY", "running_nginx"]

BINARY = shutil.which("nginx") or "/usr/sbin/nginx"

_CONFIG = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size 0;
    http2_max_concurrent_streams 1024;
    upstream triton {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://triton;
            grpc_read_timeout 600s;
            grpc_send_timeout 600s;
        }}
    }}
}}
"""


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on port {port}")


@contextlib.contextmanager
def running_nginx(upstream: str, wrapper: Sequence[str] = ()) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """nginx proxying gRPC to `upstream` (HOST:PORT) until the block ends: its address and process.
    Under a `wrapper` (a profiler's command) it runs without a master process: the process
    started is the one that serves."""
    if not Path(BINARY).exists():
        raise FileNotFoundError(f"{BINARY} is missing: install Debian's nginx (make bench does)")
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as folder:
        port = free_port()
        config = Path(folder) / "nginx.conf"
        text = _CONFIG.format(folder=folder, upstream=upstream, port=port)
        if wrapper:
            text = "master_process off;\n" + text
        config.write_text(text)
        command = [*wrapper, BINARY, "-c", str(config), "-e", f"{folder}/error.log"]
        with subprocess.Popen(command) as process:
            try:
                _wait_listening(port, 120.0 if wrapper else 10.0)
                yield f"127.0.0.1:{port}", process
            finally:
                process.terminate()
                try:
                    process.wait(60 if wrapper else 10)  # under a profiler it writes its data first
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
