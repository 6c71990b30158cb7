"""What crosses into the native core: its configuration, route tables, reflection descriptors.

The schema stays the control plane's (`gateway.config`); these functions say which part of it the
core reads, in the shape its serde types take (`crates/dataplane/src/config.rs`,
`crates/router/src/route.rs`). `tests/unit/test_core_boundary.py` round-trips them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from tritonclient.grpc import service_pb2

from gateway.config.policies import affinity_for_core, batching_for_core, policies_for_core
from gateway.config.schema import GatewayConfig
from gateway.routes import Route

__all__ = ["core_config", "reflection_descriptors", "routes_to_core"]


def core_config(config: GatewayConfig, observations: int = 0, observation_tensors: float = 0.0) -> dict[str, Any]:
    """`observations`: capacity of the observation stream (0: off, as long as nothing reads it);
    `observation_tensors`: the share of its records that carry the request and the answer.
    The core runs `workers` threads (`--workers`); none: tokio's default, one per CPU core."""
    pools = [{"name": name} | pool.model_dump(mode="json") for name, pool in config.pools.items()]
    telemetry = config.telemetry
    keep = (
        "endpoints", "outlier", "max_attempts", "retry_budget_ratio", "retry_budget_initial", "hedge_delay_ms",
        "lb_policy", "tls", "max_inflight", "max_queue", "adaptive", "dns_refresh_s", "dns_resolver",
        "connections_per_endpoint",
    )  # fmt: skip
    return {
        "listen": config.listen,
        "max_message_bytes": config.max_message_bytes,
        "metadata_ttl_s": config.metadata_ttl_s,
        "health_check_interval_s": config.health_check_interval_s,
        "health_check_timeout_s": config.health_check_timeout_s,
        "pools": [{key: pool[key] for key in ("name", *keep)} for pool in pools],
        "default_pool": config.default_pool,
        "threads": config.workers or 0,
        "max_connection_age_s": config.max_connection_age_s,
        "access_log": telemetry.access_log,
        "shadow": config.shadow.model_dump(mode="json"),
        "tls": config.tls.model_dump(mode="json") if config.tls else None,
        "payload_log": telemetry.payload_log.model_dump(mode="json") if telemetry.payload_log else None,
        "observations": observations,
        "observation_tensors": observation_tensors,
        "predictions": config.feedback.enabled or config.drift.enabled,
        "prediction_output": config.feedback.output,
        "admission": config.admission.model_dump(mode="json"),
        "tracing": {
            "exporter": telemetry.exporter,
            "otlp_endpoint": telemetry.otlp_endpoint,
            "sample_ratio": telemetry.trace_sample_ratio,
            "service_name": telemetry.service_name,
        },
        "batching": batching_for_core(config),
        "affinity": affinity_for_core(config),
        "cache": {
            key: getattr(config.cache, key)
            for key in ("l1_max_bytes", "redis_url", "redis_timeout_ms", "namespace", "compress", "ignored_parameters")
        }
        | {"policies": policies_for_core(config)},
    }


def routes_to_core(routes: Iterable[Route]) -> str:
    return json.dumps([route.to_core() for route in routes])


def _symbols(message: Descriptor) -> Iterable[str]:
    yield message.full_name
    for nested in message.nested_types:
        yield from _symbols(nested)
    for enum in message.enum_types:
        yield enum.full_name


def reflection_descriptors() -> tuple[list[str], list[tuple[str, bytes, list[str]]], dict[str, str]]:
    """Services, files (name, serialized FileDescriptorProto, imports) and symbol → file, from the
    descriptors inside tritonclient's and grpcio's generated modules."""
    roots = [service_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR]
    files: dict[str, FileDescriptor] = {}
    pending = list(roots)
    while pending:
        file = pending.pop()
        if file.name not in files:
            files[file.name] = file
            pending.extend(file.dependencies)
    symbols: dict[str, str] = {}
    for file in files.values():
        for service in file.services_by_name.values():
            symbols[service.full_name] = file.name
            symbols.update({method.full_name: file.name for method in service.methods})
        for message in file.message_types_by_name.values():
            symbols.update(dict.fromkeys(_symbols(message), file.name))
        symbols.update({enum.full_name: file.name for enum in file.enum_types_by_name.values()})
    services = [service.full_name for root in roots for service in root.services_by_name.values()]
    listed = [(f.name, f.serialized_pb, [d.name for d in f.dependencies]) for f in files.values()]
    return services, listed, symbols
