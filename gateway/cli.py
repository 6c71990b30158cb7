"""The `gateway` command: `serve`, `triton` (a local real Triton), `batch`, `demo`, and the load
generator's `loadtest`, `bench` and `soak`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Annotated

import typer

from gateway.config.flags import ServeFlags, UsageError, serve_config
from gateway.config.schema import ConfigError
from loadtest import cli as bench_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gRPC inference gateway for Triton.")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


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
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Address of the metrics listener; default: --host, else the config's.")
    ] = None,
    otlp_endpoint: Annotated[
        str | None, typer.Option(help="Send traces to this OTLP gRPC receiver (HOST:PORT).")
    ] = None,
    trace_sample_ratio: Annotated[
        float | None, typer.Option(help="Share of new traces sampled (callers' sampled traces are kept).")
    ] = None,
    access_log: Annotated[str | None, typer.Option(help="JSON-lines access log file ('-': stdout).")] = None,
    batching: Annotated[
        bool, typer.Option("--batching", help="Merge concurrent requests of batching models into one Triton call.")
    ] = False,
    max_batch_size: Annotated[
        int | None, typer.Option(help="Rows per merged call (the model's own max_batch_size applies too).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Threads of the core serving the data port; default: one per CPU core."),
    ] = None,
    max_connection_age: Annotated[
        float | None, typer.Option(help="Seconds before a client connection is asked to reconnect (re-spreads load).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Python logging level.")] = "INFO",
) -> None:
    """Serve inference.GRPCInferenceService in front of Triton pools."""
    from gateway.config.reload import ConfigSource
    from gateway.serving.run import serve as run_server

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = ServeFlags(
        config, tuple(upstream or ()), host, port, grace_period, drain_delay, admin_port, admin_token,
        cache, redis, cache_ttl, max_inflight, max_queue, metrics_port, otlp_endpoint, trace_sample_ratio, access_log,
        batching, max_batch_size, workers, max_connection_age, metrics_host,
    )  # fmt: skip
    try:
        settings = serve_config(flags)
    except UsageError as exc:
        raise _fail(str(exc)) from exc
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc}") from exc
    try:
        source = ConfigSource(config, lambda: serve_config(flags)) if config else None
        asyncio.run(run_server(settings, source))
    except (OSError, ConfigError) as exc:
        raise _fail(str(exc)) from exc


def _tail(path: Path, lines: int = 15) -> str:
    """The end of Triton's log, to show beside a failed start."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return ("\nthe end of Triton's log:\n" + "\n".join(text)) if text else ""


@app.command()
def triton(
    grpc_port: Annotated[int, typer.Option(help="Triton's gRPC port.")],
    http_port: Annotated[int | None, typer.Option(help="Triton's HTTP port (off when not given).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Triton's metrics port (off when not given).")] = None,
    address: Annotated[str, typer.Option(help="Address Triton binds.")] = "127.0.0.1",
    model_repository: Annotated[Path | None, typer.Option(help="Default: deploy/models.")] = None,
    log_file: Annotated[Path | None, typer.Option(help="Triton's own log (default: a temporary file).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Triton's own log on stderr instead.")] = False,
) -> None:
    """Run a real Triton (from the nvidia-pytriton wheel) in the foreground on the model repository:
    one line once it is ready (Triton's own log in --log-file, a temporary file, or with --verbose
    on stderr)."""
    from gateway.local.triton import DEFAULT_MODEL_REPOSITORY, TritonLaunchError, TritonOptions, TritonProcess

    options = TritonOptions(grpc_port, http_port, metrics_port, address, model_repository or DEFAULT_MODEL_REPOSITORY)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        log: IO[bytes] | None = None
        if log_file is not None:
            log = stack.enter_context(log_file.open("ab"))
        elif not verbose:
            log = stack.enter_context(tempfile.NamedTemporaryFile(prefix="triton-", suffix=".log"))
        log_path = Path(log.name) if log is not None else None
        try:
            process = TritonProcess(options)
            process.start(log)
            models = process.wait_ready()
        except TritonLaunchError as exc:
            tail = _tail(log_path) if log_path else ""
            typer.echo(f"error: Triton could not start: {exc}{tail}", err=True)
            raise typer.Exit(1) from exc
        ports = f"grpc {options.grpc_target}" + (f", http {http_port}" if http_port else "")
        ports += f", metrics {metrics_port}" if metrics_port else ""
        where = f"; its log: {log_path}" if log_path else ""
        print(f"triton ready ({ports}) with {models} models after {time.monotonic() - started:.1f}s{where}",
              flush=True)  # fmt: skip
        child = process.process
        assert child is not None
        # Pass the signal on; Triton unloads its models and exits within its exit timeout.
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGTERM))
        code = child.wait()
    raise typer.Exit(0 if code in (0, -signal.SIGTERM) else 1)


@app.command()
def batch(
    model: Annotated[str, typer.Option(help="The model to run every record through.")],
    input: Annotated[Path, typer.Option("--input", help=".jsonl (named tensors, custom_id), .npz or .parquet.")],
    output: Annotated[Path, typer.Option(help="JSON lines, one per record, in input order.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 8,
    target: Annotated[str, typer.Option(help="The gateway (or a v2 server) HOST:PORT.")] = "127.0.0.1:8001",
    version: Annotated[str, typer.Option(help="Model version; empty: the server's choice.")] = "",
    priority: Annotated[
        str, typer.Option(help="x-priority sent (default: the lowest class); empty: none, for a v2 server.")
    ] = "999999",
    resume: Annotated[bool, typer.Option(help="Carry on a killed run from its last checkpoint.")] = False,
    max_retry_s: Annotated[
        float,
        typer.Option(
            min=0, help="Per record: retries (shed, unavailable, timed out) back off exponentially within this."
        ),
    ] = 60.0,
    rows_per_request: Annotated[
        int | None,
        typer.Option(min=1, help="Records sent as one request to a batching model (default: its max_batch_size)."),
    ] = None,
) -> None:
    """Run a file of records through a model: one output per record in input order, failures in
    OUTPUT.failures.jsonl with their status, a checkpoint in OUTPUT.manifest.json to resume."""
    import asyncio

    from gateway.batch.records import RecordsError
    from gateway.batch.runner import BatchError, BatchOptions, run_batch

    options = BatchOptions(model=model, input=input, output=output, target=target, version=version,
                           concurrency=concurrency, priority=priority, resume=resume,
                           max_retry_s=max_retry_s, rows_per_request=rows_per_request)  # fmt: skip
    try:
        summary = asyncio.run(run_batch(options, show_progress=sys.stderr.isatty()))
    except (BatchError, RecordsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    resumed = f" (resumed at {summary.resumed_from})" if summary.resumed_from else ""
    typer.echo(f"{summary.records} records{resumed}: {summary.succeeded} succeeded, {summary.failed} failed "
               f"(in {options.failures}); {summary.seconds:.1f}s, {summary.rate:.0f} records/s")  # fmt: skip
    sys.exit(0 if summary.failed == 0 else 1)


@app.command()
def stream(
    model: Annotated[str, typer.Option(help="The model every entry is predicted by.")],
    input: Annotated[str, typer.Option("--input", help="The Redis Stream read (in a consumer group).")],
    output: Annotated[str, typer.Option(help="The Redis Stream the predictions are written to.")],
    redis: Annotated[str, typer.Option(help="The Redis holding the streams.")] = "redis://127.0.0.1:6379/0",
    dead_letter: Annotated[str, typer.Option(help="Where entries that fail for good go; default INPUT:dead.")] = "",
    group: Annotated[str, typer.Option(help="The consumer group; start more consumers to share the work.")] = "gateway",
    consumer: Annotated[str, typer.Option(help="This consumer's name in the group; default HOST-PID.")] = "",
    target: Annotated[str, typer.Option(help="The gateway (or a v2 server) HOST:PORT.")] = "127.0.0.1:8001",
    version: Annotated[str, typer.Option(help="Model version; empty: the server's choice.")] = "",
    priority: Annotated[str, typer.Option(help="x-priority sent; empty: the gateway's default class.")] = "",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    block: Annotated[int, typer.Option(min=1, help="Entries read at once.")] = 256,
    rows_per_request: Annotated[
        int | None, typer.Option(min=1, help="Entries sent as one request (default: the model's max_batch_size).")
    ] = None,
    claim_idle_ms: Annotated[
        int, typer.Option(min=1, help="Entries pending this long with a consumer (one that died) are claimed.")
    ] = 30_000,
    field: Annotated[str, typer.Option(help="The field holding the named tensors as JSON.")] = "inputs",
    raw: Annotated[
        list[str] | None,
        typer.Option(help="Inputs as raw little-endian bytes in a field of their name: NAME:DATATYPE:SHAPE (repeat)."),
    ] = None,
    raw_outputs: Annotated[
        bool, typer.Option(help="Outputs as raw bytes, a field each (else JSON in `outputs`).")
    ] = False,
    max_retry_s: Annotated[
        float, typer.Option(min=0, help="Shed or unavailable requests are retried, backing off, within this.")
    ] = 300.0,
    from_start: Annotated[bool, typer.Option(help="A new group reads the stream from its start, not its end.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Predict a Redis Stream as it arrives: each entry's prediction written to OUTPUT and the entry
    acknowledged in one step (none lost, none answered twice); failures for good to the dead-letter
    stream. Runs until SIGTERM or Ctrl-C."""
    import asyncio
    import dataclasses

    from gateway.stream.consumer import ModelError, StreamOptions, run_until_signalled
    from gateway.stream.entries import parse_raw

    try:
        specs = tuple(parse_raw(text) for text in raw or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    options = StreamOptions(model=model, input=input, output=output, redis_url=redis, dead_letter=dead_letter,
                            group=group, target=target, version=version, priority=priority, concurrency=concurrency,
                            block=block, rows_per_request=rows_per_request, claim_idle_ms=claim_idle_ms, field=field,
                            raw=specs, raw_outputs=raw_outputs, max_retry_s=max_retry_s, from_start=from_start,
                            metrics_port=metrics_port)  # fmt: skip
    if consumer:
        options = dataclasses.replace(options, consumer=consumer)
    try:
        asyncio.run(run_until_signalled(options, show_progress=sys.stderr.isatty()))
    except ModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


# The load generator's commands, also `gateway-bench run|suite|soak` (they need the bench extra).
app.command("loadtest")(bench_cli.run)
app.command("bench")(bench_cli.suite)
app.command("soak")(bench_cli.soak)


@app.command()
def demo() -> None:
    """Start a local Triton and the gateway, send every model a request through it, then roll a
    new version out and a broken one back."""
    from gateway.local.demo import run_demo

    sys.exit(run_demo())


def main() -> None:
    app()
