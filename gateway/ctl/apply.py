"""`gatewayctl apply -f rollout.yaml`: a rollout declared in a file a pipeline keeps beside its
model, applied idempotently (as `kubectl apply`): the same file twice starts one rollout.

The file holds what `gatewayctl rollout start` takes, by the same names, and the gates file under
`analysis` (as Flagger's Canary keeps its analysis):

    model: classifier
    candidate: "2"
    baseline: "1"          # optional: the variant with the most weight
    steps: [5, 25, 50]     # or "5,25,50"
    interval: 30s
    min_requests: 300
    analysis:              # the gates file: errors, latency, shadow, ..., webhooks
      shadow: {min_agreement: 0.85}

Applied: no rollout of the model yet, or its last one ended with another spec: it starts. The last
one has this spec (running, paused or ended): nothing changes. One runs with another spec: it is
aborted and this one starts (as Flagger restarts its analysis on a new revision). Webhook secrets
are not compared: the gateway never shows them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.admin.convert import route_from_proto
from gateway.config.schema import describe_errors
from gateway.config.yaml_text import load_yaml
from gateway.ctl.common import Connection, admin_stub, call, connected
from gateway.ctl.rollouts import TimeoutOption, WaitOption, await_rollout, parse_duration
from gateway.errors import GatewayError
from gateway.rollout.messages import spec_from_proto
from gateway.routes import Route
from gateway_admin import admin_pb2 as pb

__all__ = ["RolloutFile", "apply"]

ENDED = frozenset({"Succeeded", "RolledBack", "Aborted"})


class RolloutFile(BaseModel):
    """A rollout file's fields; their ranges are checked by the gateway's own spec, with its messages."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    baseline: str = ""
    shadow_requests: int = 0
    shadow_fraction: float = 1.0
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50])
    interval: float = 30.0
    min_requests: int = 300
    failure_limit: int = 1
    max_extensions: int = 3
    analysis: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model", "candidate", "baseline", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # version: 2

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    def to_proto(self) -> pb.RolloutSpec:
        return pb.RolloutSpec(
            model=self.model, candidate=self.candidate, baseline=self.baseline, shadow_requests=self.shadow_requests,
            shadow_fraction=self.shadow_fraction, steps=self.steps, interval_s=self.interval,
            min_requests=self.min_requests, failure_limit=self.failure_limit, max_extensions=self.max_extensions,
            analysis_yaml=yaml.safe_dump(self.analysis, sort_keys=False) if self.analysis else "",
        )  # fmt: skip


def read_rollout_file(path: Path) -> pb.RolloutSpec:
    """The file's spec; a usage error naming the file and the key when it is not one."""
    try:
        data = load_yaml(path.read_text(), str(path))
        return RolloutFile.model_validate(data).to_proto()
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc
    except ValidationError as exc:
        raise typer.BadParameter(describe_errors(exc, f"{path}: ")) from exc
    except typer.BadParameter as exc:  # a duration
        raise typer.BadParameter(f"{path}: interval: {exc.message}") from exc


def _current(conn: Connection, model: str) -> pb.RolloutStatus | None:
    """The model's last rollout, or None when it has had none."""
    with admin_stub(conn) as (stub, metadata):
        try:
            status: pb.RolloutStatus = stub.GetRollout(pb.GetRolloutRequest(model=model), metadata=metadata)
            return status
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and "no rollout" in (exc.details() or ""):
                return None
            raise


def _route(conn: Connection, model: str, path: Path) -> Route:
    """The model's route (a rollout's baseline defaults from its weights)."""
    routes = call(conn, lambda s, m: s.GetRoutes(pb.GetRoutesRequest(model=model), metadata=m))
    if not routes.routes:
        raise typer.BadParameter(f"{path}: model '{model}' has no route (gatewayctl routes lists them)")
    return route_from_proto(routes.routes[0])


def _normalized(spec: pb.RolloutSpec, route: Route, path: Path) -> dict[str, Any]:
    """The spec as the gateway will hold it (defaults filled, the baseline chosen, secrets
    hidden), checked by the gateway's own rules: a usage error with its message when it breaks one."""
    try:
        return spec_from_proto(spec, route).model_dump(mode="json")
    except GatewayError as exc:
        raise typer.BadParameter(f"{path}: {exc.message}") from exc


@connected
def apply(
    file: Annotated[Path, typer.Option("-f", "--filename", help="The rollout file (YAML).", show_default=False)],
    wait: WaitOption = False,
    timeout: TimeoutOption = "",
    *,
    conn: Connection,
) -> None:
    """Start the rollout a file declares, unless its last one has that spec already (a changed
    spec replaces a running rollout). With --wait, follow it and exit by how it ended."""
    declared = read_rollout_file(file)
    route = _route(conn, declared.model, file)
    _normalized(declared, route, file)  # checked before anything changes
    current = _current(conn, declared.model)
    same = False
    if current is not None and current.spec.candidate == declared.candidate:
        compared = pb.RolloutSpec()
        compared.CopyFrom(declared)
        compared.baseline = declared.baseline or current.spec.baseline  # as chosen when it started
        same = _normalized(compared, route, file) == _normalized(current.spec, route, file)
    if current is not None and same:
        typer.echo(f"rollout of {declared.model} unchanged ({current.phase})", err=conn.as_json)
    else:
        if current is not None and current.phase not in ENDED:
            reason = f"replaced by gatewayctl apply -f {file.name}"
            request = pb.RolloutCommandRequest(model=declared.model, reason=reason)
            call(conn, lambda s, m: s.AbortRollout(request, metadata=m))
        call(conn, lambda s, m: s.StartRollout(pb.StartRolloutRequest(spec=declared), metadata=m))
        restarted = current is not None and current.phase not in ENDED
        typer.echo(f"rollout of {declared.model} {'restarted' if restarted else 'started'}", err=conn.as_json)
    if wait:
        await_rollout(conn, declared.model, timeout)
