"""Rollouts in the admin API's messages: a spec from `StartRollout`, a status for every answer."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.config.schema import describe_errors
from gateway.config.yaml_text import load_yaml
from gateway.errors import InvalidRequest
from gateway.rollout.gates import GateSettings
from gateway.rollout.machine import RolloutState
from gateway.rollout.spec import RolloutSpec
from gateway.routes import Route
from gateway_admin import admin_pb2 as pb

__all__ = ["audit_to_proto", "parse_analysis", "spec_from_proto", "spec_to_proto", "status_to_proto"]


def parse_analysis(text: str) -> dict[str, Any]:
    """The gates file: `errors`, `latency`, `shadow` (thresholds) and `webhooks` (a list)."""
    if not text.strip():
        return {}
    try:
        data = load_yaml(text, "gates file")
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"gates file: not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"gates file: expected a mapping at the top level, got {type(data).__name__}")
    webhooks = data.pop("webhooks", [])
    try:
        gates = GateSettings.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc, "gates file: ")) from exc
    return {"gates": gates, "webhooks": webhooks}


def spec_from_proto(spec: pb.RolloutSpec, route: Route) -> RolloutSpec:
    baseline = spec.baseline or max(
        (v for v in route.variants if v.name != spec.candidate), key=lambda v: v.weight, default=None
    )
    fields: dict[str, Any] = {
        "model": spec.model, "candidate": spec.candidate,
        "baseline": baseline if isinstance(baseline, str) else baseline.name if baseline else "",
        "shadow_requests": spec.shadow_requests, **parse_analysis(spec.analysis_yaml),
    }  # fmt: skip
    if spec.shadow_fraction:
        fields["shadow_fraction"] = spec.shadow_fraction
    if spec.steps:
        fields["steps"] = tuple(spec.steps)
    if spec.interval_s:
        fields["interval_s"] = spec.interval_s
    if spec.min_requests:
        fields["min_requests"] = spec.min_requests
    if spec.HasField("failure_limit"):
        fields["failure_limit"] = spec.failure_limit
    if spec.HasField("max_extensions"):
        fields["max_extensions"] = spec.max_extensions
    try:
        return RolloutSpec.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc, "rollout.")) from exc


def spec_to_proto(spec: RolloutSpec) -> pb.RolloutSpec:
    analysis = spec.gates.model_dump(mode="json") | {"webhooks": [h.model_dump(mode="json") for h in spec.webhooks]}
    return pb.RolloutSpec(
        model=spec.model, candidate=spec.candidate, baseline=spec.baseline, shadow_requests=spec.shadow_requests,
        shadow_fraction=spec.shadow_fraction, steps=list(spec.steps), interval_s=spec.interval_s,
        min_requests=spec.min_requests, failure_limit=spec.failure_limit, max_extensions=spec.max_extensions,
        analysis_yaml=yaml.safe_dump(analysis, sort_keys=False),
    )  # fmt: skip


def status_to_proto(state: RolloutState, leading: bool) -> pb.RolloutStatus:
    spec = state.spec
    return pb.RolloutStatus(
        model=spec.model, candidate=spec.candidate, baseline=spec.baseline, phase=state.phase.value,
        step=state.step + 1, steps=list(spec.steps), weights=state.weights, shadow_fraction=state.shadow_fraction,
        failures=state.failures, failure_limit=spec.failure_limit, extensions=state.extensions,
        window_start=state.window_start, window_end=state.window_end,
        gates=[pb.GateValue(gate=g.gate, verdict=g.verdict.value, values={k: float(v) for k, v in g.values.items()},
                            detail=g.detail) for g in state.gates],
        reason=state.reason,
        history=[pb.RolloutTransition(time=h["time"], to=h["to"], step=h["step"] + 1, reason=h["reason"],
                                      **{"from": h["from"]}) for h in state.history],
        created=state.created, updated=state.updated,
        paused_from=state.resume_to.value if state.resume_to else "", leading=leading, spec=spec_to_proto(spec),
        problem=state.problem,
    )  # fmt: skip


def audit_to_proto(record: dict[str, Any]) -> pb.AuditRecord:
    def text(value: Any) -> str:
        return "" if value is None else json.dumps(value, sort_keys=True)

    identifier = record.get("id")
    return pb.AuditRecord(
        id=identifier if isinstance(identifier, int) else 0, time=record.get("time") or 0.0,
        actor=record.get("actor") or "", action=record.get("action") or "", target=record.get("target") or "",
        before_json=text(record.get("before")), after_json=text(record.get("after")),
        reason=record.get("reason") or "", prev=record.get("prev") or "", digest=record.get("digest") or "",
    )  # fmt: skip
