"""`gatewayctl rollout …` and `gatewayctl audit`: rollouts the gateway drives, and who changed what.

gatewayctl rollout start MODEL CANDIDATE [--baseline V] [--shadow-requests N] [--steps 5,25,50]
                         [--interval 30s] [--min-requests 300] [--failure-limit 1] [--gates FILE]
                         [--wait [--timeout 30m]]
gatewayctl rollout status MODEL [--json] [--watch]   # exit 0 Succeeded, 1 RolledBack, 2 Paused/Aborted, 4 running
gatewayctl rollout wait MODEL [--timeout 30m]        # exit 0 Succeeded, 1 RolledBack, 2 Paused/Aborted, 3 timed out
gatewayctl rollout pause|resume|abort|promote MODEL [--reason TEXT]
gatewayctl rollout list
gatewayctl audit [--model M] [--since 10m|2026-12-01T10:00:00] [--verify] [--limit N] [--file PATH]
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from gateway.ctl.common import (
    Connection,
    TransientError,
    call,
    connected,
    console,
    print_json,
    read_bytes,
    show,
    show_table,
)
from gateway.ctl.watch import EXIT_CODES, TIMED_OUT, clock, exit_code, follow
from gateway_admin import admin_pb2 as pb

__all__ = ["TimeoutOption", "WaitOption", "audit", "await_rollout", "parse_duration", "rollout_app", "status_view"]

rollout_app = typer.Typer(no_args_is_help=True, help="Rollouts the gateway drives: shadow, canary steps, promotion.")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def parse_duration(text: str) -> float:
    """`30s`, `2m`, `500ms`, `1h` or plain seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|)\s*", text)
    if not match:
        raise typer.BadParameter(f"expected a duration like 30s, 2m, 500ms or 1h, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


WaitOption = Annotated[
    bool, typer.Option("--wait", help="Follow it until it ends or pauses; exit 0 Succeeded, 1 RolledBack, 2 Paused "
                       "or Aborted, 3 past --timeout.")
]  # fmt: skip
TimeoutOption = Annotated[str, typer.Option(help="How long a wait may take (30m, 1h); empty: no limit.")]


def _get_rollout(stub: Any, metadata: Any, request: pb.GetRolloutRequest, timeout: float) -> pb.RolloutStatus:
    status: pb.RolloutStatus = stub.GetRollout(request, metadata=metadata, timeout=timeout)
    return status


def await_rollout(conn: Connection, model: str, timeout: str) -> None:
    """Follow MODEL's rollout, a line per change and per transition (a JSON object per line under
    --json), until it ends or pauses or `timeout` passes; then exit by its code. A gateway that
    cannot be reached for a while (restarted, its leader moving) is asked again until then."""
    limit = parse_duration(timeout) if timeout else None
    give_up = None if limit is None else time.monotonic() + limit

    def fetch() -> pb.RolloutStatus:
        request = pb.GetRolloutRequest(model=model)
        while True:
            left = 10.0 if give_up is None else max(min(give_up - time.monotonic(), 10.0), 0.1)
            try:
                rpc = functools.partial(_get_rollout, request=request, timeout=left)
                return call(conn, rpc, transient=True)
            except TransientError as exc:
                if give_up is not None and time.monotonic() >= give_up:
                    typer.echo(f"error: timed out waiting: {exc}", err=True)
                    raise typer.Exit(TIMED_OUT) from exc
                typer.echo(f"the admin API did not answer ({exc}); asking again", err=True)
                time.sleep(1.0)

    final = follow(fetch, lambda text: typer.echo(text), conn.as_json, timeout_s=limit)
    raise typer.Exit(exit_code(final, waited=True))


def _steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"expected percentages like 5,25,50, got {text!r}") from exc


def status_view(status: pb.RolloutStatus, now: float | None = None) -> Group:
    """A rollout as people read it: phase and weights, every gate's last verdict, the history."""
    now = time.time() if now is None else now
    step = f"step {status.step} of {len(status.steps)} ({status.steps[status.step - 1]}%)" if status.step else "-"
    weights = ", ".join(f"{name}={weight}" for name, weight in sorted(status.weights.items())) or "-"
    head = Table(title=f"rollout of {status.model}: {status.candidate} against {status.baseline}", show_header=False)
    rows = [
        ("phase", status.phase + (f" (resumes {status.paused_from})" if status.paused_from else "")),
        ("step", step),
        ("weights", weights + (f"; shadow {status.shadow_fraction:g} to {status.candidate}" if status.shadow_fraction else "")),  # noqa: E501
        ("window", f"{clock(status.window_start)} to {clock(status.window_end)}"
         + (f" ({max(status.window_end - now, 0):.0f}s left)" if status.phase in ("Shadow", "Canary") else "")),
        ("failures", f"{status.failures} (limit {status.failure_limit}); {status.extensions} extensions"),
        ("reason", status.reason),
        ("leader", "this gateway" if status.leading else "another gateway"),
    ]  # fmt: skip
    if status.problem:
        rows.insert(-1, ("problem", f"[red]{status.problem}[/]"))
    for name, value in rows:
        head.add_row(name, value)
    gates = Table(title="gates (last window)")
    for column in ("gate", "verdict", "numbers"):
        gates.add_column(column)
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for gate in status.gates:
        gates.add_row(gate.gate, f"[{colour.get(gate.verdict, 'white')}]{gate.verdict}[/]", gate.detail)
    history = Table(title="transitions")
    for column in ("time", "from", "to", "step", "reason"):
        history.add_column(column)
    for entry in status.history[-8:]:
        history.add_row(clock(entry.time), getattr(entry, "from"), entry.to, str(entry.step or "-"), entry.reason)
    return Group(head, gates, history)


def _show(status: pb.RolloutStatus, as_json: bool) -> None:
    if as_json:
        print_json(status)
    else:
        console.print(status_view(status))


@rollout_app.command()
@connected
def start(
    model: str,
    candidate: str,
    baseline: Annotated[str, typer.Option(help="Variant compared with (default: the one with most weight).")] = "",
    shadow_requests: Annotated[int, typer.Option(help="Paired answers for a shadow phase first; 0: none.")] = 0,
    shadow_fraction: Annotated[float, typer.Option(help="Share of requests copied in the shadow phase.")] = 1.0,
    steps: Annotated[str, typer.Option(help="The candidate's percentage at each canary step.")] = "5,25,50",
    interval: Annotated[str, typer.Option(help="Each step's window: 30s, 2m, ...")] = "30s",
    min_requests: Annotated[int, typer.Option(help="Per variant and window, else inconclusive.")] = 300,
    failure_limit: Annotated[int, typer.Option(help="Failed windows tolerated; one more rolls back.")] = 1,
    max_extensions: Annotated[int, typer.Option(help="Inconclusive windows extended before pausing.")] = 3,
    gates: Annotated[Path | None, typer.Option(help="YAML: gate thresholds and webhooks.")] = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = "",
    *,
    conn: Connection,
) -> None:
    """Start rolling CANDIDATE out for MODEL: shadow phase, canary steps, then promotion."""
    analysis = read_bytes(gates).decode() if gates else ""
    spec = pb.RolloutSpec(model=model, candidate=candidate, baseline=baseline, shadow_requests=shadow_requests,
                          shadow_fraction=shadow_fraction, steps=_steps(steps), interval_s=parse_duration(interval),
                          min_requests=min_requests, failure_limit=failure_limit, max_extensions=max_extensions,
                          analysis_yaml=analysis)  # fmt: skip
    started = call(conn, lambda s, m: s.StartRollout(pb.StartRolloutRequest(spec=spec), metadata=m))
    if wait:
        await_rollout(conn, model, timeout)
    _show(started, conn.as_json)


@rollout_app.command("wait")
@connected
def wait_for(
    model: str,
    timeout: TimeoutOption = "",
    *,
    conn: Connection,
) -> None:
    """Follow MODEL's rollout until it ends or pauses, printing its transitions as they happen;
    exit 0 on Succeeded, 1 on RolledBack, 2 on Paused or Aborted, 3 when --timeout passes first
    (for a CI/CD pipeline to gate on)."""
    await_rollout(conn, model, timeout)


@rollout_app.command()
@connected
def status(
    model: str,
    watch: Annotated[
        bool, typer.Option(help="Follow it until it ends or pauses (off a terminal: a line per change).")
    ] = False,
    *,
    conn: Connection,
) -> None:
    """Phase, step, weights, every gate's last value and verdict, and why it last moved. Exits 0 on
    Succeeded, 1 on RolledBack, 2 on Paused or Aborted, 4 while it still runs (--watch: once it
    ends or pauses, by the same codes)."""

    def fetch() -> pb.RolloutStatus:
        return call(conn, lambda s, m: s.GetRollout(pb.GetRolloutRequest(model=model), metadata=m))

    if not watch:
        current = fetch()
        _show(current, conn.as_json)
        raise typer.Exit(exit_code(current))
    if conn.as_json or not sys.stdout.isatty():
        current = follow(fetch, lambda text: typer.echo(text), conn.as_json)
        raise typer.Exit(exit_code(current))
    with Live(status_view(fetch()), console=console, refresh_per_second=2) as live:
        while True:
            current = fetch()
            live.update(status_view(current))
            if current.phase in EXIT_CODES:  # ended, or waiting for a person
                break
            time.sleep(1.0)
    raise typer.Exit(exit_code(current))


def _command(verb: str, help_text: str) -> None:
    @connected
    def command(
        model: str,
        reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
        *,
        conn: Connection,
    ) -> None:
        request = pb.RolloutCommandRequest(model=model, reason=reason)
        rpc = f"{verb.capitalize()}Rollout"
        _show(call(conn, lambda s, m: getattr(s, rpc)(request, metadata=m)), conn.as_json)

    command.__doc__ = help_text
    rollout_app.command(verb)(command)


_command("pause", "Hold the rollout where it is (weights stay).")
_command("resume", "Carry on a paused rollout with a fresh window.")
_command("abort", "Stop the rollout: all weight back on the baseline, shadow off.")
_command("promote", "Skip the remaining steps: all weight on the candidate now.")


def _list_rollouts_view(response: pb.ListRolloutsResponse) -> Table:
    table = Table(title="rollouts")
    for column in ("model", "candidate", "baseline", "phase", "step", "weights", "updated", "reason"):
        table.add_column(column)
    for r in response.rollouts:
        weights = ", ".join(f"{k}={v}" for k, v in sorted(r.weights.items()))
        table.add_row(r.model, r.candidate, r.baseline, r.phase, f"{r.step}/{len(r.steps)}", weights,
                      clock(r.updated), r.reason[:80])  # fmt: skip
    return table


@rollout_app.command("list")
@connected
def list_rollouts(*, conn: Connection) -> None:
    """Every rollout this gateway knows, running or ended."""
    response = call(conn, lambda s, m: s.ListRollouts(pb.ListRolloutsRequest(), metadata=m))
    show(conn, response, _list_rollouts_view)


def _since(text: str) -> float:
    if not text:
        return 0.0
    try:
        return float(text) if re.fullmatch(r"\d{9,}(\.\d+)?", text) else time.time() - parse_duration(text)
    except typer.BadParameter:
        try:
            return dt.datetime.fromisoformat(text).timestamp()
        except ValueError as exc:
            raise typer.BadParameter(
                f"--since: a duration ago (10m) or a time (2026-12-01T10:00), got {text!r}"
            ) from exc


def _records_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="audit trail")
    for column in ("id", "time", "actor", "action", "target", "change", "reason"):
        table.add_column(column)
    for r in records:
        change = json.dumps(r.get("after"), sort_keys=True) if r.get("after") is not None else ""
        table.add_row(str(r.get("id")), clock(r.get("time") or 0), str(r.get("actor")), str(r.get("action")),
                      str(r.get("target")), change[:70], str(r.get("reason") or "")[:70])  # fmt: skip
    return table


def _from_proto(record: pb.AuditRecord) -> dict[str, Any]:
    def parse(text: str) -> Any:
        return json.loads(text) if text else None

    return {"id": record.id, "time": record.time, "actor": record.actor, "action": record.action,
            "target": record.target, "before": parse(record.before_json), "after": parse(record.after_json),
            "reason": record.reason, "prev": record.prev, "digest": record.digest}  # fmt: skip


@connected
def audit(
    model: Annotated[str, typer.Option(help="Only records about this model.")] = "",
    since: Annotated[str, typer.Option(help="A duration ago (10m, 2h) or a time (ISO 8601).")] = "",
    verify_chain: Annotated[bool, typer.Option("--verify", help="Check the hash chain; exit 1 if broken.")] = False,
    limit: Annotated[int, typer.Option(help="The newest this many; 0: all.")] = 0,
    file: Annotated[Path | None, typer.Option(help="Read a trail file here instead of asking a gateway.")] = None,
    *,
    conn: Connection,
) -> None:
    """Who changed routes, weights, shadows, the cache and rollouts, when, and why."""
    after = _since(since)
    if file is not None:
        records, broken_text, count = _read_local(file, verify_chain)
    else:
        request = pb.GetAuditRequest(model=model, since=after, verify=verify_chain, limit=limit)
        response = call(conn, lambda s, m: s.GetAudit(request, metadata=m))
        records = [_from_proto(r) for r in response.records]
        count = response.verified_count
        broken_text = f"record {response.broken_id}: {response.broken_reason}" if response.broken_id else ""
    chosen = [r for r in records if (not model or r.get("target") == model) and (r.get("time") or 0) >= after]
    chosen = chosen[-limit:] if limit else chosen
    _print_audit(conn, chosen, verify_chain, count, broken_text)


def _read_local(file: Path, verify_chain: bool) -> tuple[list[dict[str, Any]], str, int]:
    from gateway.audit import read_trail, verify  # here: the trail's module brings redis, slow to import

    records = read_trail(file) if file.exists() else []
    count, broken = verify(records) if verify_chain else (0, None)
    return records, f"record {broken.id}: {broken.reason}" if broken else "", count


def _print_audit(conn: Connection, records: list[dict[str, Any]], checked: bool, count: int, broken: str) -> None:
    if conn.as_json:
        typer.echo(json.dumps({"records": records, "verified": checked and not broken, "broken": broken}, indent=1))
    else:
        show_table(_records_table(records))
        if checked:
            console.print(f"[red]chain broken at {broken}[/]" if broken else f"chain verified: {count} records")
    if checked and broken:
        raise typer.Exit(1)
