"""The gateway's configuration: one YAML file, validated once, then frozen.

Validation errors name the key path and the bad value (`pools.main.endpoints.0: ...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "PoolConfig",
    "RouteConfig",
    "config_for_upstreams",
    "load_config",
    "parse_config",
]

DEFAULT_POOL = "default"


class ConfigError(Exception):
    """The configuration cannot be used; the message names each bad key and value."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_address(address: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return address


Address = Annotated[str, AfterValidator(_check_address)]


class PoolConfig(_Frozen):
    """A pool of interchangeable Triton endpoints."""

    endpoints: list[Address] = Field(min_length=1)


class RouteConfig(_Frozen):
    """Where a public model name goes: a pool, and optionally another upstream name/version."""

    pool: str
    model: str | None = None
    version: str = ""

    @field_validator("version")
    @classmethod
    def _numeric_version(cls, version: str) -> str:
        if version and not version.isdigit():
            raise ValueError(f"a model version is a positive integer, got {version!r}")
        return version


class GatewayConfig(_Frozen):
    listen: Address = "0.0.0.0:8001"
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    grace_period_s: float = Field(default=30.0, ge=0)
    # Health says NOT_SERVING this long before new requests are refused, so load balancers notice.
    drain_delay_s: float = Field(default=1.0, ge=0)
    metadata_ttl_s: float = Field(default=10.0, ge=0)
    health_check_interval_s: float = Field(default=1.0, gt=0)
    health_check_timeout_s: float = Field(default=1.0, gt=0)
    pools: dict[str, PoolConfig] = Field(min_length=1)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    default_pool: str | None = None

    @model_validator(mode="after")
    def _pools_exist(self) -> GatewayConfig:
        if self.default_pool is not None and self.default_pool not in self.pools:
            raise ValueError(f"default_pool: unknown pool {self.default_pool!r} (pools: {sorted(self.pools)})")
        for model, route in self.routes.items():
            if route.pool not in self.pools:
                raise ValueError(f"routes.{model}.pool: unknown pool {route.pool!r} (pools: {sorted(self.pools)})")
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # cross-key checks name their keys themselves
            lines.append(message)
            continue
        key = ".".join(str(part) for part in item["loc"])
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{key}: {message}{shown}")
    return "; ".join(lines)


def parse_config(data: Any) -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def load_config(path: Path) -> GatewayConfig:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data)


def config_for_upstreams(upstreams: list[str], listen: str, **overrides: Any) -> GatewayConfig:
    """The zero-config case: one pool of the given endpoints, every model routed to it."""
    data = {"listen": listen, "pools": {DEFAULT_POOL: {"endpoints": upstreams}}, "default_pool": DEFAULT_POOL}
    return parse_config(data | overrides)
