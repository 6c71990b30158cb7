from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Variant(_message.Message):
    __slots__ = ("name", "pool", "model", "version", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    pool: str
    model: str
    version: str
    weight: int
    def __init__(self, name: _Optional[str] = ..., pool: _Optional[str] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class MatchRule(_message.Message):
    __slots__ = ("header", "op", "values", "variant")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQUALS: _ClassVar[MatchRule.Op]
        ONE_OF: _ClassVar[MatchRule.Op]
        PREFIX: _ClassVar[MatchRule.Op]
    EQUALS: MatchRule.Op
    ONE_OF: MatchRule.Op
    PREFIX: MatchRule.Op
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    header: str
    op: MatchRule.Op
    values: _containers.RepeatedScalarFieldContainer[str]
    variant: str
    def __init__(self, header: _Optional[str] = ..., op: _Optional[_Union[MatchRule.Op, str]] = ..., values: _Optional[_Iterable[str]] = ..., variant: _Optional[str] = ...) -> None: ...

class ShadowPolicy(_message.Message):
    __slots__ = ("variant", "fraction", "max_inflight")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    variant: str
    fraction: float
    max_inflight: int
    def __init__(self, variant: _Optional[str] = ..., fraction: _Optional[float] = ..., max_inflight: _Optional[int] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("model", "variants", "rules", "sticky_header", "shadows", "discovered")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    STICKY_HEADER_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    DISCOVERED_FIELD_NUMBER: _ClassVar[int]
    model: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    rules: _containers.RepeatedCompositeFieldContainer[MatchRule]
    sticky_header: str
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowPolicy]
    discovered: bool
    def __init__(self, model: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[MatchRule, _Mapping]]] = ..., sticky_header: _Optional[str] = ..., shadows: _Optional[_Iterable[_Union[ShadowPolicy, _Mapping]]] = ..., discovered: _Optional[bool] = ...) -> None: ...

class GetRoutesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetRoutesResponse(_message.Message):
    __slots__ = ("routes", "revision")
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    revision: int
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class SetRouteRequest(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: Route
    def __init__(self, route: _Optional[_Union[Route, _Mapping]] = ...) -> None: ...

class SetWeightsRequest(_message.Message):
    __slots__ = ("model", "weights")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights: _containers.ScalarMap[str, int]
    def __init__(self, model: _Optional[str] = ..., weights: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("model", "variant")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    model: str
    variant: str
    def __init__(self, model: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class SetShadowRequest(_message.Message):
    __slots__ = ("model", "shadow")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    shadow: ShadowPolicy
    def __init__(self, model: _Optional[str] = ..., shadow: _Optional[_Union[ShadowPolicy, _Mapping]] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("route", "revision")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    route: Route
    revision: int
    def __init__(self, route: _Optional[_Union[Route, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetShadowStatsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("model", "primary", "variant", "sent", "dropped", "failed", "compared", "exact_matches", "argmax_compared", "argmax_disagreements", "max_abs_error", "max_rel_error", "abs_error_histogram", "mismatches", "streams", "first_k_agreements", "first_response_pairs", "primary_first_response_ms", "shadow_first_response_ms")
    class AbsErrorHistogramEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCHES_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_COMPARED_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_DISAGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERROR_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERROR_FIELD_NUMBER: _ClassVar[int]
    ABS_ERROR_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    FIRST_K_AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_PAIRS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIRST_RESPONSE_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIRST_RESPONSE_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    primary: str
    variant: str
    sent: int
    dropped: int
    failed: int
    compared: int
    exact_matches: int
    argmax_compared: int
    argmax_disagreements: int
    max_abs_error: float
    max_rel_error: float
    abs_error_histogram: _containers.ScalarMap[str, int]
    mismatches: int
    streams: int
    first_k_agreements: int
    first_response_pairs: int
    primary_first_response_ms: float
    shadow_first_response_ms: float
    def __init__(self, model: _Optional[str] = ..., primary: _Optional[str] = ..., variant: _Optional[str] = ..., sent: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., compared: _Optional[int] = ..., exact_matches: _Optional[int] = ..., argmax_compared: _Optional[int] = ..., argmax_disagreements: _Optional[int] = ..., max_abs_error: _Optional[float] = ..., max_rel_error: _Optional[float] = ..., abs_error_histogram: _Optional[_Mapping[str, int]] = ..., mismatches: _Optional[int] = ..., streams: _Optional[int] = ..., first_k_agreements: _Optional[int] = ..., first_response_pairs: _Optional[int] = ..., primary_first_response_ms: _Optional[float] = ..., shadow_first_response_ms: _Optional[float] = ...) -> None: ...

class GetShadowStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[ShadowStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[ShadowStats, _Mapping]]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class RouteEvent(_message.Message):
    __slots__ = ("revision", "kind", "model", "route")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    kind: str
    model: str
    route: Route
    def __init__(self, revision: _Optional[int] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., route: _Optional[_Union[Route, _Mapping]] = ...) -> None: ...

class GetCacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("enabled_by_default", "redis_configured", "redis_breaker", "hits_l1", "hits_l2", "misses", "bypassed", "stores", "too_large", "coalesced", "l1_entries", "l1_bytes", "l1_max_bytes", "evictions", "l2_errors", "l2_skipped", "invalidated")
    ENABLED_BY_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    REDIS_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    REDIS_BREAKER_FIELD_NUMBER: _ClassVar[int]
    HITS_L1_FIELD_NUMBER: _ClassVar[int]
    HITS_L2_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    BYPASSED_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    TOO_LARGE_FIELD_NUMBER: _ClassVar[int]
    COALESCED_FIELD_NUMBER: _ClassVar[int]
    L1_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    L1_BYTES_FIELD_NUMBER: _ClassVar[int]
    L1_MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    L2_ERRORS_FIELD_NUMBER: _ClassVar[int]
    L2_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    enabled_by_default: bool
    redis_configured: bool
    redis_breaker: str
    hits_l1: int
    hits_l2: int
    misses: int
    bypassed: int
    stores: int
    too_large: int
    coalesced: int
    l1_entries: int
    l1_bytes: int
    l1_max_bytes: int
    evictions: int
    l2_errors: int
    l2_skipped: int
    invalidated: int
    def __init__(self, enabled_by_default: _Optional[bool] = ..., redis_configured: _Optional[bool] = ..., redis_breaker: _Optional[str] = ..., hits_l1: _Optional[int] = ..., hits_l2: _Optional[int] = ..., misses: _Optional[int] = ..., bypassed: _Optional[int] = ..., stores: _Optional[int] = ..., too_large: _Optional[int] = ..., coalesced: _Optional[int] = ..., l1_entries: _Optional[int] = ..., l1_bytes: _Optional[int] = ..., l1_max_bytes: _Optional[int] = ..., evictions: _Optional[int] = ..., l2_errors: _Optional[int] = ..., l2_skipped: _Optional[int] = ..., invalidated: _Optional[int] = ...) -> None: ...

class InvalidateCacheRequest(_message.Message):
    __slots__ = ("model", "variant", "all")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    model: str
    variant: str
    all: bool
    def __init__(self, model: _Optional[str] = ..., variant: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class InvalidateCacheResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...

class GetPoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class EndpointStats(_message.Message):
    __slots__ = ("address", "ready", "ejected", "ejected_for_s", "outstanding", "latency_ewma_ms", "ejections", "unready_models", "source", "connections")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FIELD_NUMBER: _ClassVar[int]
    EJECTED_FOR_S_FIELD_NUMBER: _ClassVar[int]
    OUTSTANDING_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    UNREADY_MODELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    address: str
    ready: bool
    ejected: bool
    ejected_for_s: float
    outstanding: int
    latency_ewma_ms: float
    ejections: int
    unready_models: _containers.RepeatedScalarFieldContainer[str]
    source: str
    connections: int
    def __init__(self, address: _Optional[str] = ..., ready: _Optional[bool] = ..., ejected: _Optional[bool] = ..., ejected_for_s: _Optional[float] = ..., outstanding: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., ejections: _Optional[int] = ..., unready_models: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ..., connections: _Optional[int] = ...) -> None: ...

class DnsNameStats(_message.Message):
    __slots__ = ("name", "addresses", "resolutions", "failures", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    resolutions: int
    failures: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., resolutions: _Optional[int] = ..., failures: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("name", "limit", "in_flight", "queued", "max_queue", "attempts", "retries", "retries_denied", "ejections", "admitted", "admitted_after_queueing", "shed", "expired", "cancelled", "queue_wait_p50_ms", "queue_wait_p99_ms", "endpoints", "hedges", "names", "shed_by_reason", "tenants", "classes", "affinity")
    class ShedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class AffinityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    RETRIES_DENIED_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_AFTER_QUEUEING_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    HEDGES_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SHED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    limit: int
    in_flight: int
    queued: int
    max_queue: int
    attempts: int
    retries: int
    retries_denied: int
    ejections: int
    admitted: int
    admitted_after_queueing: int
    shed: int
    expired: int
    cancelled: int
    queue_wait_p50_ms: float
    queue_wait_p99_ms: float
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointStats]
    hedges: int
    names: _containers.RepeatedCompositeFieldContainer[DnsNameStats]
    shed_by_reason: _containers.ScalarMap[str, int]
    tenants: _containers.RepeatedCompositeFieldContainer[QueueShare]
    classes: _containers.RepeatedCompositeFieldContainer[QueueShare]
    affinity: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., limit: _Optional[int] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., max_queue: _Optional[int] = ..., attempts: _Optional[int] = ..., retries: _Optional[int] = ..., retries_denied: _Optional[int] = ..., ejections: _Optional[int] = ..., admitted: _Optional[int] = ..., admitted_after_queueing: _Optional[int] = ..., shed: _Optional[int] = ..., expired: _Optional[int] = ..., cancelled: _Optional[int] = ..., queue_wait_p50_ms: _Optional[float] = ..., queue_wait_p99_ms: _Optional[float] = ..., endpoints: _Optional[_Iterable[_Union[EndpointStats, _Mapping]]] = ..., hedges: _Optional[int] = ..., names: _Optional[_Iterable[_Union[DnsNameStats, _Mapping]]] = ..., shed_by_reason: _Optional[_Mapping[str, int]] = ..., tenants: _Optional[_Iterable[_Union[QueueShare, _Mapping]]] = ..., classes: _Optional[_Iterable[_Union[QueueShare, _Mapping]]] = ..., affinity: _Optional[_Mapping[str, int]] = ...) -> None: ...

class QueueShare(_message.Message):
    __slots__ = ("tenant", "priority", "queued", "in_flight", "admitted", "admitted_after_queueing", "shed", "shed_by_reason", "expired", "queue_wait_p99_ms")
    class ShedByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_AFTER_QUEUEING_FIELD_NUMBER: _ClassVar[int]
    SHED_FIELD_NUMBER: _ClassVar[int]
    SHED_BY_REASON_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    priority: int
    queued: int
    in_flight: int
    admitted: int
    admitted_after_queueing: int
    shed: int
    shed_by_reason: _containers.ScalarMap[str, int]
    expired: int
    queue_wait_p99_ms: float
    def __init__(self, tenant: _Optional[str] = ..., priority: _Optional[int] = ..., queued: _Optional[int] = ..., in_flight: _Optional[int] = ..., admitted: _Optional[int] = ..., admitted_after_queueing: _Optional[int] = ..., shed: _Optional[int] = ..., shed_by_reason: _Optional[_Mapping[str, int]] = ..., expired: _Optional[int] = ..., queue_wait_p99_ms: _Optional[float] = ...) -> None: ...

class GetPoolStatsResponse(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedCompositeFieldContainer[PoolStats]
    def __init__(self, pools: _Optional[_Iterable[_Union[PoolStats, _Mapping]]] = ...) -> None: ...

class GetStreamStatsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("model", "variant", "requests", "done", "failed", "cancelled", "broken", "responses", "first_response_p50_ms", "first_response_p99_ms", "gap_p50_ms", "gap_p99_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    BROKEN_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_P50_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_RESPONSE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    GAP_P50_MS_FIELD_NUMBER: _ClassVar[int]
    GAP_P99_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    variant: str
    requests: int
    done: int
    failed: int
    cancelled: int
    broken: int
    responses: int
    first_response_p50_ms: float
    first_response_p99_ms: float
    gap_p50_ms: float
    gap_p99_ms: float
    def __init__(self, model: _Optional[str] = ..., variant: _Optional[str] = ..., requests: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ..., cancelled: _Optional[int] = ..., broken: _Optional[int] = ..., responses: _Optional[int] = ..., first_response_p50_ms: _Optional[float] = ..., first_response_p99_ms: _Optional[float] = ..., gap_p50_ms: _Optional[float] = ..., gap_p99_ms: _Optional[float] = ...) -> None: ...

class GetStreamStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[StreamStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[StreamStats, _Mapping]]] = ...) -> None: ...

class RolloutSpec(_message.Message):
    __slots__ = ("model", "candidate", "baseline", "shadow_requests", "shadow_fraction", "steps", "interval_s", "min_requests", "failure_limit", "max_extensions", "analysis_yaml")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_YAML_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidate: str
    baseline: str
    shadow_requests: int
    shadow_fraction: float
    steps: _containers.RepeatedScalarFieldContainer[int]
    interval_s: float
    min_requests: int
    failure_limit: int
    max_extensions: int
    analysis_yaml: str
    def __init__(self, model: _Optional[str] = ..., candidate: _Optional[str] = ..., baseline: _Optional[str] = ..., shadow_requests: _Optional[int] = ..., shadow_fraction: _Optional[float] = ..., steps: _Optional[_Iterable[int]] = ..., interval_s: _Optional[float] = ..., min_requests: _Optional[int] = ..., failure_limit: _Optional[int] = ..., max_extensions: _Optional[int] = ..., analysis_yaml: _Optional[str] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: RolloutSpec
    def __init__(self, spec: _Optional[_Union[RolloutSpec, _Mapping]] = ...) -> None: ...

class RolloutCommandRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListRolloutsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GateValue(_message.Message):
    __slots__ = ("gate", "verdict", "values", "detail")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    gate: str
    verdict: str
    values: _containers.ScalarMap[str, float]
    detail: str
    def __init__(self, gate: _Optional[str] = ..., verdict: _Optional[str] = ..., values: _Optional[_Mapping[str, float]] = ..., detail: _Optional[str] = ...) -> None: ...

class RolloutTransition(_message.Message):
    __slots__ = ("time", "to", "step", "reason")
    TIME_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    time: float
    to: str
    step: int
    reason: str
    def __init__(self, time: _Optional[float] = ..., to: _Optional[str] = ..., step: _Optional[int] = ..., reason: _Optional[str] = ..., **kwargs) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model", "candidate", "baseline", "phase", "step", "steps", "weights", "shadow_fraction", "failures", "failure_limit", "extensions", "window_start", "window_end", "gates", "reason", "history", "created", "updated", "paused_from", "leading", "spec", "problem")
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FROM_FIELD_NUMBER: _ClassVar[int]
    LEADING_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    model: str
    candidate: str
    baseline: str
    phase: str
    step: int
    steps: _containers.RepeatedScalarFieldContainer[int]
    weights: _containers.ScalarMap[str, int]
    shadow_fraction: float
    failures: int
    failure_limit: int
    extensions: int
    window_start: float
    window_end: float
    gates: _containers.RepeatedCompositeFieldContainer[GateValue]
    reason: str
    history: _containers.RepeatedCompositeFieldContainer[RolloutTransition]
    created: float
    updated: float
    paused_from: str
    leading: bool
    spec: RolloutSpec
    problem: str
    def __init__(self, model: _Optional[str] = ..., candidate: _Optional[str] = ..., baseline: _Optional[str] = ..., phase: _Optional[str] = ..., step: _Optional[int] = ..., steps: _Optional[_Iterable[int]] = ..., weights: _Optional[_Mapping[str, int]] = ..., shadow_fraction: _Optional[float] = ..., failures: _Optional[int] = ..., failure_limit: _Optional[int] = ..., extensions: _Optional[int] = ..., window_start: _Optional[float] = ..., window_end: _Optional[float] = ..., gates: _Optional[_Iterable[_Union[GateValue, _Mapping]]] = ..., reason: _Optional[str] = ..., history: _Optional[_Iterable[_Union[RolloutTransition, _Mapping]]] = ..., created: _Optional[float] = ..., updated: _Optional[float] = ..., paused_from: _Optional[str] = ..., leading: _Optional[bool] = ..., spec: _Optional[_Union[RolloutSpec, _Mapping]] = ..., problem: _Optional[str] = ...) -> None: ...

class ListRolloutsResponse(_message.Message):
    __slots__ = ("rollouts",)
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutStatus]
    def __init__(self, rollouts: _Optional[_Iterable[_Union[RolloutStatus, _Mapping]]] = ...) -> None: ...

class GetAuditRequest(_message.Message):
    __slots__ = ("model", "since", "verify", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    since: float
    verify: bool
    limit: int
    def __init__(self, model: _Optional[str] = ..., since: _Optional[float] = ..., verify: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("id", "time", "actor", "action", "target", "before_json", "after_json", "reason", "prev", "digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BEFORE_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: float
    actor: str
    action: str
    target: str
    before_json: str
    after_json: str
    reason: str
    prev: str
    digest: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., before_json: _Optional[str] = ..., after_json: _Optional[str] = ..., reason: _Optional[str] = ..., prev: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class GetAuditResponse(_message.Message):
    __slots__ = ("records", "verified", "verified_count", "broken_id", "broken_reason")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    BROKEN_ID_FIELD_NUMBER: _ClassVar[int]
    BROKEN_REASON_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    verified: bool
    verified_count: int
    broken_id: str
    broken_reason: str
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., verified: _Optional[bool] = ..., verified_count: _Optional[int] = ..., broken_id: _Optional[str] = ..., broken_reason: _Optional[str] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("request_id", "class_label", "value", "reward", "observed_time")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TIME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    class_label: int
    value: float
    reward: float
    observed_time: float
    def __init__(self, request_id: _Optional[str] = ..., class_label: _Optional[int] = ..., value: _Optional[float] = ..., reward: _Optional[float] = ..., observed_time: _Optional[float] = ...) -> None: ...

class ReportOutcomesRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[Outcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[Outcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomesResponse(_message.Message):
    __slots__ = ("accepted", "unmatched", "late", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    unmatched: int
    late: int
    duplicate: int
    def __init__(self, accepted: _Optional[int] = ..., unmatched: _Optional[int] = ..., late: _Optional[int] = ..., duplicate: _Optional[int] = ...) -> None: ...

class GetOutcomesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class VariantQuality(_message.Message):
    __slots__ = ("variant", "predictions", "labelled", "accuracy", "valued", "mae", "rmse", "rewarded", "mean_reward", "coverage", "late", "duplicate", "mean_top_probability", "predicted_classes", "label_lag_histogram")
    class PredictedClassesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelLagHistogramEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    VALUED_FIELD_NUMBER: _ClassVar[int]
    MAE_FIELD_NUMBER: _ClassVar[int]
    RMSE_FIELD_NUMBER: _ClassVar[int]
    REWARDED_FIELD_NUMBER: _ClassVar[int]
    MEAN_REWARD_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_TOP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_LAG_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    variant: str
    predictions: int
    labelled: int
    accuracy: float
    valued: int
    mae: float
    rmse: float
    rewarded: int
    mean_reward: float
    coverage: float
    late: int
    duplicate: int
    mean_top_probability: float
    predicted_classes: _containers.ScalarMap[int, int]
    label_lag_histogram: _containers.ScalarMap[str, int]
    def __init__(self, variant: _Optional[str] = ..., predictions: _Optional[int] = ..., labelled: _Optional[int] = ..., accuracy: _Optional[float] = ..., valued: _Optional[int] = ..., mae: _Optional[float] = ..., rmse: _Optional[float] = ..., rewarded: _Optional[int] = ..., mean_reward: _Optional[float] = ..., coverage: _Optional[float] = ..., late: _Optional[int] = ..., duplicate: _Optional[int] = ..., mean_top_probability: _Optional[float] = ..., predicted_classes: _Optional[_Mapping[int, int]] = ..., label_lag_histogram: _Optional[_Mapping[str, int]] = ...) -> None: ...

class GetOutcomesResponse(_message.Message):
    __slots__ = ("model", "variants", "unmatched")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_FIELD_NUMBER: _ClassVar[int]
    model: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantQuality]
    unmatched: int
    def __init__(self, model: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantQuality, _Mapping]]] = ..., unmatched: _Optional[int] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "psi", "ks_p", "level", "drifted")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    KS_P_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    feature: str
    psi: float
    ks_p: float
    level: str
    drifted: bool
    def __init__(self, feature: _Optional[str] = ..., psi: _Optional[float] = ..., ks_p: _Optional[float] = ..., level: _Optional[str] = ..., drifted: _Optional[bool] = ...) -> None: ...

class VariantDrift(_message.Message):
    __slots__ = ("variant", "windows", "collecting", "last_start", "last_end", "last_samples", "drifted_share", "drifted", "consecutive", "features")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    COLLECTING_FIELD_NUMBER: _ClassVar[int]
    LAST_START_FIELD_NUMBER: _ClassVar[int]
    LAST_END_FIELD_NUMBER: _ClassVar[int]
    LAST_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    variant: str
    windows: int
    collecting: int
    last_start: float
    last_end: float
    last_samples: int
    drifted_share: float
    drifted: bool
    consecutive: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    def __init__(self, variant: _Optional[str] = ..., windows: _Optional[int] = ..., collecting: _Optional[int] = ..., last_start: _Optional[float] = ..., last_end: _Optional[float] = ..., last_samples: _Optional[int] = ..., drifted_share: _Optional[float] = ..., drifted: _Optional[bool] = ..., consecutive: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("model", "reference_source", "reference_samples", "collecting", "variants", "triggers_fired", "triggers_skipped")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    COLLECTING_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIRED_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    model: str
    reference_source: str
    reference_samples: int
    collecting: int
    variants: _containers.RepeatedCompositeFieldContainer[VariantDrift]
    triggers_fired: int
    triggers_skipped: int
    def __init__(self, model: _Optional[str] = ..., reference_source: _Optional[str] = ..., reference_samples: _Optional[int] = ..., collecting: _Optional[int] = ..., variants: _Optional[_Iterable[_Union[VariantDrift, _Mapping]]] = ..., triggers_fired: _Optional[int] = ..., triggers_skipped: _Optional[int] = ...) -> None: ...

class SetDriftReferenceRequest(_message.Message):
    __slots__ = ("model", "npz")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NPZ_FIELD_NUMBER: _ClassVar[int]
    model: str
    npz: bytes
    def __init__(self, model: _Optional[str] = ..., npz: _Optional[bytes] = ...) -> None: ...
