"""`gateway serve --workers N`: N gateway processes on one port, under a supervisor.

Each worker is a whole gateway with its own event loop, bound to the same port with SO_REUSEPORT:
the kernel spreads *connections* across them. gRPC clients keep one connection for a long time,
so `max_connection_age_s` (GOAWAY after that age, in-flight calls finish) makes clients reconnect
and land on a worker again: long-lived clients are re-spread over time. Requests on one connection
stay on one worker (see loadtest/RESULTS.md for what handing them over would cost).

What must agree across workers is shared or derived deterministically: routes from the config file
(each worker reloads it) or through Redis (`--redis`; required when the admin API can change them),
sticky routing by rendezvous hashing, the cache's second tier in Redis. Worker 0 serves the admin
API. The supervisor serves /metrics: every worker's series with a `worker` label, scraped from each
worker's private endpoint, so sums across workers are exact. A worker that dies is restarted;
SIGTERM/SIGINT drain every worker; SIGHUP is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, GatewayConfig
from gateway.metrics_server import MetricsServer
from gateway.server import Serving, ready_line, serve
from gateway.worker_metrics import SupervisorMetrics

__all__ = ["run_workers", "worker_configs"]

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 120.0
_RESTART_BACKOFF_S = 1.0


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _with_port(address: str) -> str:
    host, _, port = address.rpartition(":")
    return address if int(port) else f"{host}:{_free_port(host)}"


def worker_configs(config: GatewayConfig) -> list[GatewayConfig]:
    """Each worker's configuration: the same ports for all (0 resolved once, here), the admin API
    on worker 0 only, metrics on a private port when the supervisor serves them."""
    workers = config.workers
    if workers > 1 and config.admin is not None and config.shared.redis_url is None:
        raise ConfigError(
            f"--workers {workers} with the admin API needs --redis (shared.redis_url): a route changed "
            "through worker 0's admin API reaches the other workers through Redis"
        )
    listen = _with_port(config.listen)
    admin = config.admin.model_copy(update={"listen": _with_port(config.admin.listen)}) if config.admin else None
    metrics = config.telemetry.metrics_port is not None
    telemetry = config.telemetry.model_copy(
        update={"metrics_host": "127.0.0.1", "metrics_port": 0 if metrics else None}
    )
    return [
        config.model_copy(update={"listen": listen, "admin": admin if index == 0 else None, "telemetry": telemetry})
        for index in range(workers)
    ]


def _worker(
    index: int, config: GatewayConfig, config_path: Path | None, ready: multiprocessing.Queue[Any], level: str
) -> None:
    """A worker process: one gateway; says where its metrics are once it serves."""
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")

    def announce(_: GatewayConfig, serving: Serving) -> None:
        ready.put((index, serving.metrics))

    try:
        asyncio.run(serve(config, config_path, announce))
    except (OSError, ConfigError) as exc:
        log.error("worker %d cannot serve: %s", index, exc)
        sys.exit(2)


class _Supervisor:
    def __init__(self, config: GatewayConfig, config_path: Path | None, level: str) -> None:
        self.config = config
        self.configs = worker_configs(config)
        self.config_path = config_path
        self.level = level
        self._context = multiprocessing.get_context("spawn")  # no fork after grpc has started threads
        self.ready: multiprocessing.Queue[Any] = self._context.Queue()
        self.processes: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self.metrics: dict[int, str] = {}
        self.own_metrics = SupervisorMetrics(lambda: dict(self.metrics), self.running)

    def start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker,
            args=(index, self.configs[index], self.config_path, self.ready, self.level),
            name=f"gateway-worker-{index}",
        )
        process.start()
        self.processes[index] = process
        self.started_at[index] = time.monotonic()

    def collect_announcements(self, wait_s: float) -> bool:
        """Record workers that say they serve; False when nothing came within `wait_s`."""
        try:
            index, metrics = self.ready.get(timeout=wait_s)
        except queue.Empty:
            return False
        if metrics:
            self.metrics[index] = metrics
        return True

    def running(self) -> int:
        return sum(process.is_alive() for process in self.processes.values())

    def exited(self) -> list[int]:
        return [index for index, process in self.processes.items() if process.exitcode is not None]

    def signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    def join_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            process.join(max(deadline - time.monotonic(), 0.0))
        if stragglers := [p for p in self.processes.values() if p.exitcode is None]:
            log.error("%d worker(s) did not stop within %.0fs: killed", len(stragglers), timeout_s)
            for process in stragglers:
                process.kill()
                process.join()


async def _supervise(supervisor: _Supervisor) -> int:
    loop = asyncio.get_running_loop()
    workers = len(supervisor.configs)
    for index in range(workers):
        supervisor.start(index)
    announced = 0
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while announced < workers:
        if await asyncio.to_thread(supervisor.collect_announcements, 0.2):
            announced += 1
        elif supervisor.exited() or time.monotonic() > deadline:
            log.error("a worker exited (or none answered in %.0fs) before all served: stopping", _READY_TIMEOUT_S)
            supervisor.signal_all(signal.SIGTERM)
            await asyncio.to_thread(supervisor.join_all, 10.0)
            return 1
    telemetry = supervisor.config.telemetry
    metrics_server = None
    metrics = None
    if telemetry.metrics_port is not None:
        metrics_server = MetricsServer(supervisor.own_metrics.registry, telemetry.metrics_host, telemetry.metrics_port)
        metrics = f"{telemetry.metrics_host}:{await metrics_server.start()}"
    first = supervisor.configs[0]
    host, _, port = first.listen.rpartition(":")
    serving = Serving(host, int(port), first.admin.listen if first.admin else None, metrics)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
    print(ready_line(supervisor.config, serving, f", {workers} workers"), flush=True)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.25)
        while supervisor.collect_announcements(0):
            pass
        for index in supervisor.exited():
            if stopping.is_set() or time.monotonic() - supervisor.started_at[index] < _RESTART_BACKOFF_S:
                continue
            log.error("worker %d exited with code %s: restarting it", index, supervisor.processes[index].exitcode)
            supervisor.own_metrics.restarts.inc()
            supervisor.metrics.pop(index, None)
            supervisor.start(index)
    log.info("signal received: draining %d workers", workers)
    supervisor.signal_all(signal.SIGTERM)
    config = supervisor.config
    await asyncio.to_thread(supervisor.join_all, config.grace_period_s + config.drain_delay_s + 10.0)
    if metrics_server is not None:
        await metrics_server.stop()
    return 0


def run_workers(config: GatewayConfig, config_path: Path | None, level: str) -> int:
    """Serve with `config.workers` processes until SIGTERM/SIGINT; the exit code."""
    return asyncio.run(_supervise(_Supervisor(config, config_path, level)))
