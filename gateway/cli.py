"""The `gateway` command: `serve`, `triton` (a local real Triton) and `demo`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from gateway.config import ConfigError, GatewayConfig, config_for_upstreams, load_config, parse_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gRPC inference gateway for Triton.")


@dataclass(frozen=True)
class CacheFlags:
    enabled: bool
    redis: str | None
    ttl_s: float | None


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _serve_config(
    config: Path | None,
    upstream: list[str],
    host: str | None,
    port: int | None,
    grace_period: float | None,
    drain_delay: float | None,
    admin_port: int | None,
    admin_token: str | None,
    cache: CacheFlags,
    limits: tuple[int | None, int | None] = (None, None),
) -> GatewayConfig:
    if config is not None and upstream:
        raise _fail("give either --config or --upstream, not both")
    if config is None and not upstream:
        raise _fail("give --config FILE or at least one --upstream HOST:PORT")
    overrides: dict[str, object] = {}
    if grace_period is not None:
        overrides["grace_period_s"] = grace_period
    if drain_delay is not None:
        overrides["drain_delay_s"] = drain_delay
    try:
        loaded = load_config(config) if config else config_for_upstreams(upstream, "0.0.0.0:8001")
        config_host, _, config_port = loaded.listen.rpartition(":")
        if host is not None or port is not None:
            overrides["listen"] = f"{host or config_host}:{config_port if port is None else port}"
        if admin_port is not None or admin_token is not None:
            admin = loaded.admin.model_dump() if loaded.admin else {"listen": f"{host or config_host}:8002"}
            if admin_port is not None:
                admin["listen"] = f"{admin['listen'].rpartition(':')[0]}:{admin_port}"
            if admin_token is not None:
                admin["token"] = admin_token
            overrides["admin"] = admin
        if cache.enabled or cache.redis or cache.ttl_s:
            settings = loaded.cache.model_dump()
            settings["enabled"] = settings["enabled"] or cache.enabled
            settings["redis_url"] = cache.redis or settings["redis_url"]
            settings["ttl_s"] = cache.ttl_s or settings["ttl_s"]
            overrides["cache"] = settings
        max_inflight, max_queue = limits
        if max_inflight is not None or max_queue is not None:
            pools = {name: pool.model_dump() for name, pool in loaded.pools.items()}
            for pool in pools.values():
                pool["max_inflight"] = pool["max_inflight"] if max_inflight is None else max_inflight
                pool["max_queue"] = pool["max_queue"] if max_queue is None else max_queue
            overrides["pools"] = pools
        return parse_config(loaded.model_dump() | overrides)
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc}") from exc


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="YAML configuration file.")] = None,
    upstream: Annotated[
        list[str] | None, typer.Option(help="Triton HOST:PORT; every model is routed to it (no config file).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Listen address; default 0.0.0.0 or the config's.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Listen port (0: any free one); default 8001 or the config's.")
    ] = None,
    grace_period: Annotated[float | None, typer.Option(help="Seconds in-flight requests get on SIGTERM.")] = None,
    drain_delay: Annotated[
        float | None, typer.Option(help="Seconds of NOT_SERVING health before refusing new requests.")
    ] = None,
    admin_port: Annotated[int | None, typer.Option(help="Serve the admin API on this port (0: any free one).")] = None,
    admin_token: Annotated[
        str | None, typer.Option(help="Admin bearer token; default: env GATEWAY_ADMIN_TOKEN.", show_default=False)
    ] = None,
    cache: Annotated[
        bool, typer.Option("--cache", help="Cache responses of every route (only for deterministic models).")
    ] = False,
    redis: Annotated[
        str | None, typer.Option(help="Redis URL for the shared cache tier, e.g. redis://127.0.0.1:6379/0.")
    ] = None,
    cache_ttl: Annotated[float | None, typer.Option(help="Seconds a cached response lives.")] = None,
    max_inflight: Annotated[
        int | None, typer.Option(help="Requests under way towards Triton per pool (0: no limit).")
    ] = None,
    max_queue: Annotated[int | None, typer.Option(help="Requests waiting per pool beyond that; more are shed.")] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Serve inference.GRPCInferenceService in front of Triton pools."""
    from gateway.server import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache_flags = CacheFlags(cache, redis, cache_ttl)
    settings = _serve_config(
        config, upstream or [], host, port, grace_period, drain_delay, admin_port, admin_token, cache_flags,
        (max_inflight, max_queue),
    )  # fmt: skip
    try:
        asyncio.run(run_server(settings, config))
    except (OSError, ConfigError) as exc:
        raise _fail(str(exc)) from exc


@app.command()
def triton(
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port.")],
    http_port: Annotated[int | None, typer.Option(help="Triton's HTTP port (off when not given).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Triton's metrics port (off when not given).")] = None,
    address: Annotated[str, typer.Option(help="Address Triton binds.")] = "127.0.0.1",
    model_repository: Annotated[Path | None, typer.Option(help="Default: deploy/models.")] = None,
    log_file: Annotated[Path | None, typer.Option(help="Triton's own log (default: stderr).")] = None,
) -> None:
    """Run a real Triton (from the nvidia-pytriton wheel) in the foreground on the model repository."""
    from gateway.triton import DEFAULT_MODEL_REPOSITORY, TritonLaunchError, TritonOptions, TritonProcess

    options = TritonOptions(grpc_port, http_port, metrics_port, address, model_repository or DEFAULT_MODEL_REPOSITORY)
    started = time.monotonic()
    log = log_file.open("ab") if log_file else None
    try:
        process = TritonProcess(options)
        process.start(log)
        models = process.wait_ready()
    except TritonLaunchError as exc:
        typer.echo(f"error: Triton could not start: {exc}", err=True)
        raise typer.Exit(1) from exc
    ports = f"grpc {options.grpc_target}" + (f", http {http_port}" if http_port else "")
    ports += f", metrics {metrics_port}" if metrics_port else ""
    print(f"triton ready ({ports}) with {models} models after {time.monotonic() - started:.1f}s", flush=True)
    child = process.process
    assert child is not None
    # Pass the signal on; Triton unloads its models and exits within its exit timeout.
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGTERM))
    code = child.wait()
    raise typer.Exit(0 if code in (0, -signal.SIGTERM) else 1)


@app.command()
def demo() -> None:
    """Start a local Triton and the gateway, send every model a request through it, show a table."""
    from gateway.demo import run_demo

    sys.exit(run_demo())


def main() -> None:
    app()
