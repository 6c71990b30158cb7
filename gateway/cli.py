"""The `gateway` command: `serve`, `triton` (a local real Triton) and `demo`."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from gateway.config import ConfigError, GatewayConfig, config_for_upstreams, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gRPC inference gateway for Triton.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _serve_config(
    config: Path | None, upstream: list[str], host: str, port: int | None, grace_period: float | None
) -> GatewayConfig:
    if config is not None and upstream:
        raise _fail("give either --config or --upstream, not both")
    if config is None and not upstream:
        raise _fail("give --config FILE or at least one --upstream HOST:PORT")
    overrides: dict[str, float] = {} if grace_period is None else {"grace_period_s": grace_period}
    try:
        if config is None:
            return config_for_upstreams(upstream, f"{host}:{8001 if port is None else port}", **overrides)
        loaded = load_config(config)
        if port is not None:
            overrides_listen = f"{loaded.listen.rpartition(':')[0]}:{port}"
            return loaded.model_copy(update={"listen": overrides_listen, **overrides})
        return loaded.model_copy(update=overrides)
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc}") from exc


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="YAML configuration file.")] = None,
    upstream: Annotated[
        list[str] | None, typer.Option(help="Triton HOST:PORT; every model is routed to it (no config file).")
    ] = None,
    host: Annotated[str, typer.Option(help="Listen address (with --upstream).")] = "0.0.0.0",
    port: Annotated[int | None, typer.Option(help="Listen port (0: any free port); default 8001.")] = None,
    grace_period: Annotated[float | None, typer.Option(help="Seconds in-flight requests get on SIGTERM.")] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Serve inference.GRPCInferenceService in front of Triton pools."""
    from gateway.server import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _serve_config(config, upstream or [], host, port, grace_period)
    try:
        asyncio.run(run_server(settings))
    except OSError as exc:
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
