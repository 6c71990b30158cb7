"""The gateway's configuration: one YAML file, validated once, then frozen.

Validation errors name the key path and the bad value (`pools.main.endpoints.0: ...`).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.config.yaml_text import load_yaml
from gateway.routes import MatchOp, MatchRule, Route, RouteError, ShadowPolicy, Variant, check_route

__all__ = [
    "BatchingConfig",
    "ConfigError",
    "GatewayConfig",
    "PoolConfig",
    "RouteConfig",
    "config_for_upstreams",
    "describe_errors",
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


def _check_endpoint(endpoint: str) -> str:
    """HOST:PORT, or `dns:NAME:PORT` (gRPC's `dns:///NAME:PORT` too): every address NAME resolves to."""
    if not endpoint.startswith("dns:"):
        return _check_address(endpoint)
    try:
        _check_address(endpoint.removeprefix("dns:").removeprefix("///"))
    except ValueError as exc:
        raise ValueError(f"expected dns:NAME:PORT, got {endpoint!r}") from exc
    return endpoint


def _check_ip_port(address: str) -> str:
    host = _check_address(address).rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"expected IP:PORT (a DNS server), got {address!r}") from exc
    return address


Address = Annotated[str, AfterValidator(_check_address)]
Endpoint = Annotated[str, AfterValidator(_check_endpoint)]
IpPort = Annotated[str, AfterValidator(_check_ip_port)]


class OutlierConfig(_Frozen):
    """Passive outlier ejection: consecutive failures take an endpoint out for a growing while."""

    consecutive_failures: int = Field(default=5, ge=1)
    base_ejection_s: float = Field(default=1.0, gt=0)
    max_ejection_s: float = Field(default=30.0, gt=0)
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class AdaptiveConfig(_Frozen):
    """The concurrency limit follows measured latency (gradient, as Envoy's filter) within bounds."""

    min_limit: int = Field(default=2, ge=1)
    max_limit: int = Field(default=256, ge=1)
    window: int = Field(default=50, ge=5)  # samples per limit update


class UpstreamTlsConfig(_Frozen):
    """TLS towards a pool's Tritons (`--grpc-use-ssl`); client certificate for `--grpc-use-ssl-mutual`."""

    ca: Path | None = None  # trusted roots; none: the system's
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None  # expected in the certificate when it differs from the host


class TlsConfig(_Frozen):
    """TLS on the gateway's listeners (data plane and admin); mTLS when `client_ca` is set."""

    cert: Path
    key: Path
    client_ca: Path | None = None  # clients must present a certificate signed by it


class PoolConfig(_Frozen):
    """A pool of interchangeable Triton endpoints, with its admission limits and resilience."""

    endpoints: list[Endpoint] = Field(min_length=1)  # HOST:PORT, or dns:NAME:PORT (every address of NAME)
    dns_refresh_s: float = Field(default=5.0, gt=0)  # dns: endpoints are resolved again this often
    dns_resolver: IpPort | None = None  # the DNS server for dns: endpoints; none: the system's
    # HTTP/2 connections to each endpoint that unary calls spread over, opened as the load needs
    # them: a call goes on the least loaded (request bytes); another opens when each carries 1 MiB+.
    connections_per_endpoint: int = Field(default=8, ge=1, le=64)
    max_inflight: int = Field(default=0, ge=0)  # requests under way towards Triton; 0: no limit
    max_queue: int = Field(default=100, ge=0)  # waiting beyond max_inflight; more are shed
    adaptive: AdaptiveConfig | None = None
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    max_attempts: int = Field(default=2, ge=1)  # first try + retries on other endpoints
    retry_budget_ratio: float = Field(default=0.2, ge=0)  # retries per request, over time
    retry_budget_initial: float = Field(default=3.0, ge=0)
    # Inference is idempotent: after this long without an answer, a second attempt goes to
    # another endpoint and the first answer wins (hedging; off when null).
    hedge_delay_ms: float | None = Field(default=None, gt=0)
    # least_request: power of two choices weighed by requests under way x latency (the faster
    # endpoint gets more); round_robin: each eligible endpoint in turn, equal shares (Envoy's names).
    lb_policy: Literal["least_request", "round_robin"] = "least_request"
    tls: UpstreamTlsConfig | None = None


Header = Annotated[str, AfterValidator(lambda h: h.lower())]
# `version: 2` as YAML writes it unquoted is the version "2" (Triton's versions are numbers).
VersionText = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)]


class VariantConfig(_Frozen):
    name: str = Field(min_length=1)
    pool: str
    model: str | None = None  # default: the route's public name
    version: VersionText = ""  # checked with the rest of the route (router.check_route)
    weight: int = Field(default=0, ge=0)


class MatchConfig(_Frozen):
    """One rule: `header` equals / is one of / starts with a prefix → `variant`."""

    header: Header
    equals: str | None = None
    one_of: list[str] | None = None
    prefix: str | None = None
    variant: str

    @model_validator(mode="after")
    def _one_operator(self) -> MatchConfig:
        given = [op for op in ("equals", "one_of", "prefix") if getattr(self, op) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of equals / one_of / prefix, got {given or 'none'}")
        return self


class ShadowPolicyConfig(_Frozen):
    variant: str
    fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    max_inflight: int = Field(default=16, ge=1)


Tier = Literal["l1", "l2"]
# Request parameters that never change outputs, left out of the cache key.
DEFAULT_IGNORED_PARAMETERS: frozenset[str] = frozenset(
    {"priority", "timeout", "traceparent", "tracestate", "triton_enable_empty_final_response"}
)


class RouteCacheConfig(_Frozen):
    """A route's own cache settings; unset values come from the top-level `cache` section."""

    enabled: bool = True
    ttl_s: float | None = Field(default=None, gt=0)
    max_entry_bytes: int | None = Field(default=None, gt=0)
    tiers: list[Tier] | None = None
    # Streamed answers of deterministic requests too (a hit replays the sequence); without it, a
    # caller may still ask for it per request with the parameter `cache_stream: true`.
    streams: bool = False


class CacheConfig(_Frozen):
    """The response cache. Only for deterministic models: a hit never reaches Triton."""

    enabled: bool = False  # for routes without their own `cache` section (zero-config: --cache)
    ttl_s: float = Field(default=300.0, gt=0)
    max_entry_bytes: int = Field(default=1 << 20, gt=0)
    tiers: list[Tier] = Field(default_factory=lambda: list[Tier](["l1", "l2"]))
    l1_max_bytes: int = Field(default=256 << 20, gt=0)
    redis_url: str | None = None  # tier 2 off without it
    redis_timeout_ms: float = Field(default=50.0, gt=0)
    namespace: str = "tgw:"
    compress: bool = False
    # Request parameters that cannot change outputs, so they are left out of the key.
    ignored_parameters: list[str] = Field(default_factory=lambda: sorted(DEFAULT_IGNORED_PARAMETERS))


class RouteBatchingConfig(_Frozen):
    """A route's own micro-batching settings; unset values come from the top-level `batching`."""

    enabled: bool = True
    max_batch_size: int | None = Field(default=None, ge=1)
    max_inflight: int | None = Field(default=None, ge=1)


class BatchingConfig(_Frozen):
    """Gateway-side micro-batching, for models with max_batch_size > 0 (zero-config: --batching).

    Concurrent requests for the same model and variant are merged along the batch dimension into
    one upstream call. No timer: a request goes at once when no merged call is under way, else it
    waits for that call and leaves with the others who arrived meanwhile."""

    enabled: bool = False  # for routes without their own `batching` section
    max_batch_size: int = Field(default=64, ge=1)  # rows per merged call (the model's own cap applies too)
    max_inflight: int = Field(default=1, ge=1)  # merged calls under way at once per model


class RouteAffinityConfig(_Frozen):
    """Prefix affinity for a route's streamed requests: requests that share a prompt prefix go to
    the endpoint that served it (its prefix / KV cache), bounded by load; no tokenizer needed."""

    input: str = Field(min_length=1)  # the prompt: token ids (an integer input) or BYTES
    block_size: int = Field(default=16, ge=1)  # elements per block (bytes for BYTES)
    session_header: Header | None = "x-session-id"  # pins a conversation; none: prefixes only
    load_factor: float = Field(default=1.25, ge=1.0)  # of an endpoint's fair share of requests under way
    max_blocks: int = Field(default=512, ge=1)  # a longer prompt's tail is not hashed


class RouteConfig(_Frozen):
    """A public model name: its variants, rules, sticky key and shadows."""

    variants: list[VariantConfig] = Field(min_length=1)
    match: list[MatchConfig] = Field(default_factory=list)
    sticky_header: Header | None = None
    shadows: list[ShadowPolicyConfig] = Field(default_factory=list)
    cache: RouteCacheConfig | None = None
    batching: RouteBatchingConfig | None = None
    affinity: RouteAffinityConfig | None = None

    def to_route(self, model: str) -> Route:
        variants = tuple(Variant(v.name, v.pool, v.model or model, v.version, v.weight) for v in self.variants)
        rules = tuple(
            MatchRule(rule.header, op, tuple(values), rule.variant)
            for rule in self.match
            for op, values in (
                (MatchOp.EQUALS, [rule.equals] if rule.equals is not None else None),
                (MatchOp.ONE_OF, rule.one_of),
                (MatchOp.PREFIX, [rule.prefix] if rule.prefix is not None else None),
            )
            if values is not None
        )
        shadows = tuple(ShadowPolicy(s.variant, s.fraction, s.max_inflight) for s in self.shadows)
        return Route(model, variants, rules, self.sticky_header, shadows)


class TenantConfig(_Frozen):
    """A tenant's share of a busy pool and its own caps (per pool)."""

    weight: float = Field(default=1.0, gt=0.0)  # its share against the other tenants' weights
    max_queue: int | None = Field(default=None, ge=0)  # its requests queued at most; none: the pool's
    max_inflight: int | None = Field(default=None, ge=1)  # its requests under way at most


class AdmissionConfig(_Frozen):
    """Priority classes and tenants, for the pools' queues."""

    priority_levels: int = Field(default=3, ge=1)  # 1 is the highest
    default_priority: int = Field(default=2, ge=1)
    priority_header: Header = "x-priority"  # or the request parameter `priority`
    tenant_header: Header = "x-tenant"
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)  # named tenants
    default_tenant: TenantConfig = TenantConfig()  # every tenant not named (and requests without one)
    max_tenants: int = Field(default=100, ge=1)  # tenants counted apart in metrics; the rest: "other"

    @model_validator(mode="after")
    def _default_in_range(self) -> AdmissionConfig:
        if self.default_priority > self.priority_levels:
            raise ValueError(f"default_priority {self.default_priority} exceeds priority_levels {self.priority_levels}")
        return self


class PayloadLogConfig(_Frozen):
    """A sampled log of whole requests and responses (base64 protobuf), for audit and replay."""

    path: Path
    fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    max_bytes: int = Field(default=100_000_000, gt=0)  # per file; rotated past this
    backups: int = Field(default=3, ge=0)


class TelemetryConfig(_Frozen):
    metrics_port: int | None = Field(default=None, ge=0, le=65535)  # Prometheus /metrics; none: off
    metrics_host: str = "0.0.0.0"
    trace_exporter: Literal["otlp", "console", "none"] | None = None  # default: otlp with an endpoint
    otlp_endpoint: str | None = None  # HOST:PORT of an OTLP gRPC receiver (collector)
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # for traces the caller did not sample
    service_name: str = "triton-gateway"
    access_log: str | None = None  # JSON lines; "-" for stdout
    payload_log: PayloadLogConfig | None = None

    @property
    def exporter(self) -> str:
        return self.trace_exporter or ("otlp" if self.otlp_endpoint else "none")


class SharedConfig(_Frozen):
    """State every replica must agree on (route tables) lives in this Redis."""

    redis_url: str | None = None  # none: each replica has its own routes
    namespace: str = "tgw:"


class AdminConfig(_Frozen):
    """The admin API's own listener; every call needs `authorization: Bearer <token>`."""

    listen: Address
    # Read from the environment (GATEWAY_ADMIN_TOKEN) when not set here; acts as `admin` in the
    # audit trail. Required unless `tokens` names some.
    token: str | None = Field(default=None, min_length=8)
    tokens: dict[str, str] = Field(default_factory=dict)  # name -> token: who acted, in the audit trail

    @field_validator("tokens")
    @classmethod
    def _named_tokens(cls, tokens: dict[str, str]) -> dict[str, str]:
        for name, token in tokens.items():
            if len(token) < 8:
                raise ValueError(f"the token of {name!r} is shorter than 8 characters")
        if len(set(tokens.values())) != len(tokens):
            raise ValueError("two names share one token: the audit trail could not tell them apart")
        return tokens


class AuditConfig(_Frozen):
    """The audit trail: JSON lines with a hash chain (and the shared Redis stream, with replicas)."""

    path: Path | None = None  # none: the last `memory_records` are kept in memory
    memory_records: int = Field(default=10_000, ge=1)


class FeedbackConfig(_Frozen):
    """Ground truth joined to predictions: every OK ModelInfer answer is summarized (its class
    and top probability, or its value) and kept until its outcome comes."""

    enabled: bool = False
    output: str | None = None  # the output summarized; none: the first floating-point one
    ttl_s: float = Field(default=86_400.0, gt=0)  # predictions wait this long for their outcome
    max_records: int = Field(default=1_000_000, ge=1)  # in memory (without shared Redis)
    max_label_lag_s: float = Field(default=86_400.0, gt=0)  # outcomes observed later: late, not judged
    # An outcome reported before its prediction reached the control plane (within ~0.5 s of the
    # answer) is tried again this long before it counts as unmatched; 0: at once.
    hold_s: float = Field(default=2.0, ge=0, le=60)
    queue: int = Field(default=65_536, ge=1)  # the core's observation stream; beyond: dropped, counted


class DriftWebhookConfig(_Frozen):
    """The retraining trigger: POSTed when a variant's inputs or outputs have drifted."""

    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    secret: str | None = Field(default=None, repr=False)  # signs the body: X-Gateway-Signature: sha256=<HMAC>
    secret_env: str | None = None
    retries: int = Field(default=3, ge=0, le=10)  # with exponential back-off from 0.5 s
    cooldown_s: float = Field(default=3600.0, ge=0)  # per model and variant, between triggers


class DriftConfig(_Frozen):
    """Drift of inputs and outputs, on a sampled share of requests (their tensors)."""

    enabled: bool = False
    sample: float = Field(default=0.05, gt=0, le=1)  # share of requests whose tensors are looked at
    reference_samples: int = Field(default=1000, ge=10)  # frozen from the main variant's first ones
    window_samples: int = Field(default=500, ge=10)  # a window closes after this many samples ...
    window_s: float | None = Field(default=None, gt=0)  # ... or after this long (with min_samples)
    min_samples: int = Field(default=50, ge=2)
    bins: int = Field(default=10, ge=2, le=100)
    psi_warn: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)
    ks_alpha: float = Field(default=0.05, gt=0, lt=1)  # Bonferroni-corrected over the features
    drifted_share: float = Field(default=0.5, gt=0, le=1)  # of features, for the dataset to count as drifted
    consecutive: int = Field(default=3, ge=1)  # drifted windows in a row before the trigger
    max_elements: int = Field(default=64, ge=1)  # per input row; larger inputs: mean and std
    reference_dir: Path | None = None  # references kept here survive a restart; none: memory only
    webhook: DriftWebhookConfig | None = None


class NewVersionConfig(_Frozen):
    """A rollout started by itself when a routed model's pool holds a newer version than any of
    the route's variants (which must pin numeric versions): the version joins the route as `v<N>`
    at weight 0 and is rolled out against the variant with the most weight."""

    spec: dict[str, Any] = Field(default_factory=dict)  # steps, interval_s, gates, webhooks, ... (as `rollout.yaml`)
    models: list[str] = Field(default_factory=list)  # the routes watched; empty: every route
    poll_s: float = Field(default=10.0, gt=0)  # how often the pools' repository indexes are read

    @model_validator(mode="after")
    def _spec_valid(self) -> NewVersionConfig:
        from gateway.rollout.spec import RolloutSpec  # the rollout's own validation and messages

        named = {"model", "candidate", "baseline"} & set(self.spec)
        if named:
            raise ValueError(f"spec: {sorted(named)} are found by the gateway, not given")
        RolloutSpec.model_validate(self.spec | {"model": "m", "candidate": "new", "baseline": "old"})
        return self


class RolloutsConfig(_Frozen):
    """The rollout controller. With `shared.redis_url`, state lives in Redis and one replica leads."""

    state_file: Path | None = None  # without Redis: where state survives a restart; none: memory only
    tick_s: float = Field(default=1.0, gt=0, le=60)  # how often windows are looked at
    lease_s: float = Field(default=10.0, gt=0)  # a leader that stops renewing is replaced after this
    on_new_version: NewVersionConfig | None = None  # off unless given


class ShadowConfig(_Frozen):
    timeout_s: float = Field(default=10.0, gt=0)
    log_path: Path | None = None  # JSON lines of discrepancies; none: no log
    log_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    log_max_bytes: int = Field(default=10_000_000, gt=0)  # rotated once past this, one backup kept
    log_tensors: bool = False  # full output tensors in each line


class GatewayConfig(_Frozen):
    listen: Address = "0.0.0.0:8001"
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    # Threads of the core serving the data port (`gateway serve --workers`); none: one per CPU core.
    workers: int | None = Field(default=None, ge=1)
    # Clients are sent GOAWAY after this long on one connection, so they reconnect and are spread
    # again over workers and replicas (in-flight calls get as long again to finish); none: never.
    max_connection_age_s: float | None = Field(default=None, gt=0)
    grace_period_s: float = Field(default=30.0, ge=0)
    # Health says NOT_SERVING this long before new requests are refused, so load balancers notice.
    drain_delay_s: float = Field(default=1.0, ge=0)
    metadata_ttl_s: float = Field(default=10.0, ge=0)
    health_check_interval_s: float = Field(default=1.0, gt=0)
    health_check_timeout_s: float = Field(default=1.0, gt=0)
    pools: dict[str, PoolConfig] = Field(min_length=1)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    default_pool: str | None = None
    route_history: int = Field(default=10, ge=1)  # earlier routes kept per model for rollback
    admin: AdminConfig | None = None
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    shared: SharedConfig = Field(default_factory=SharedConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    rollouts: RolloutsConfig = Field(default_factory=RolloutsConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _pools_exist(self) -> GatewayConfig:
        if self.default_pool is not None and self.default_pool not in self.pools:
            raise ValueError(f"default_pool: unknown pool {self.default_pool!r} (pools: {sorted(self.pools)})")
        for model, route in self.routes.items():
            try:  # the route's own checks, the same the admin API applies
                check_route(route.to_route(model), self.pools)
            except RouteError as exc:
                raise ValueError(str(exc)) from exc
        return self


def describe_errors(error: ValidationError, where: str = "") -> str:
    """Each error as `KEY: message (got VALUE)`, the key after `where` (e.g. "gates file: ")."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # cross-key checks name their keys themselves
            lines.append(f"{where.rstrip(' .:')}: {message}" if where else message)
            continue
        key = ".".join(str(part) for part in item["loc"])
        value = item.get("input")
        shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{where}{key}: {message}{shown}")
    return "; ".join(lines)


def parse_config(data: Any) -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from exc


def load_config(path: Path) -> GatewayConfig:
    try:
        data = load_yaml(path.read_text(), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return parse_config(data)


def config_for_upstreams(upstreams: list[str], listen: str, **overrides: Any) -> GatewayConfig:
    """The zero-config case: one pool of the given endpoints, every model routed to it."""
    data = {"listen": listen, "pools": {DEFAULT_POOL: {"endpoints": upstreams}}, "default_pool": DEFAULT_POOL}
    return parse_config(data | overrides)
