"""`gateway serve` flags applied over the configuration (a file, or the zero-config defaults).

A flag given on the command line wins over the file; the result is validated like a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.schema import GatewayConfig, config_for_upstreams, load_config, parse_config

__all__ = ["ServeFlags", "UsageError", "serve_config"]


class UsageError(Exception):
    """The flags contradict each other."""


@dataclass(frozen=True)
class ServeFlags:
    config: Path | None = None
    upstream: tuple[str, ...] = ()
    host: str | None = None
    port: int | None = None
    grace_period: float | None = None
    drain_delay: float | None = None
    admin_port: int | None = None
    admin_token: str | None = None
    cache: bool = False
    redis: str | None = None
    cache_ttl: float | None = None
    max_inflight: int | None = None
    max_queue: int | None = None
    metrics_port: int | None = None
    otlp_endpoint: str | None = None
    trace_sample_ratio: float | None = None
    access_log: str | None = None
    batching: bool = False
    max_batch_size: int | None = None
    workers: int | None = None
    max_connection_age: float | None = None
    metrics_host: str | None = None


def _section(current: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return current | {key: value for key, value in changes.items() if value is not None}


def serve_config(flags: ServeFlags) -> GatewayConfig:
    """The configuration to serve with; ConfigError (naming the key) when it does not validate."""
    if flags.config is not None and flags.upstream:
        raise UsageError("give either --config or --upstream, not both")
    if flags.config is None and not flags.upstream:
        raise UsageError("give --config FILE or at least one --upstream HOST:PORT")
    loaded = load_config(flags.config) if flags.config else config_for_upstreams(list(flags.upstream), "0.0.0.0:8001")
    data = loaded.model_dump()
    data |= _section(
        {}, grace_period_s=flags.grace_period, drain_delay_s=flags.drain_delay, workers=flags.workers,
        max_connection_age_s=flags.max_connection_age,
    )  # fmt: skip
    host, _, port = loaded.listen.rpartition(":")
    if flags.host is not None or flags.port is not None:
        data["listen"] = f"{flags.host or host}:{port if flags.port is None else flags.port}"
    if flags.admin_port is not None or flags.admin_token is not None:
        admin = data["admin"] or {"listen": f"{flags.host or host}:8002"}
        if flags.admin_port is not None:
            admin["listen"] = f"{admin['listen'].rpartition(':')[0]}:{flags.admin_port}"
        data["admin"] = _section(admin, token=flags.admin_token)
    data["cache"] = _section(data["cache"], redis_url=flags.redis, ttl_s=flags.cache_ttl)
    data["shared"] = _section(data["shared"], redis_url=flags.redis)  # --redis: cache tier 2 and shared routes
    data["cache"]["enabled"] = data["cache"]["enabled"] or flags.cache
    data["batching"] = _section(data["batching"], max_batch_size=flags.max_batch_size)
    data["batching"]["enabled"] = data["batching"]["enabled"] or flags.batching
    for pool in data["pools"].values():
        pool |= _section({}, max_inflight=flags.max_inflight, max_queue=flags.max_queue)
    # The metrics listener follows --host unless told otherwise (the flag, or the file's own key).
    metrics_host = flags.metrics_host
    if metrics_host is None and flags.host is not None and "metrics_host" not in loaded.telemetry.model_fields_set:
        metrics_host = flags.host
    data["telemetry"] = _section(
        data["telemetry"], metrics_port=flags.metrics_port, otlp_endpoint=flags.otlp_endpoint,
        trace_sample_ratio=flags.trace_sample_ratio, access_log=flags.access_log, metrics_host=metrics_host,
    )  # fmt: skip
    return parse_config(data)
