"""`gatewayctl outcomes MODEL` and `gatewayctl report-outcomes FILE`: ground truth and how each
variant fares against it (accuracy, MAE/RMSE, mean reward, coverage, label lag, and the
label-free confidence estimate before labels arrive).

    gatewayctl report-outcomes labels.jsonl   # {"request_id": "...", "label": 3, "time": ...}
                                              # ("value": 2.5 or "reward": 1 instead of "label")
    gatewayctl outcomes classifier [--json]
    gatewayctl drift classifier                # per variant, the worst features first
    gatewayctl drift reference classifier reference.npz
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gateway.ctl.common import (
    Connection,
    admin_stub,
    call,
    connected,
    console,
    read_bytes,
    show,
    show_table,
)
from gateway_admin import admin_pb2 as pb

__all__ = ["drift", "outcomes", "report_outcomes"]

_BATCH = 1000


def _outcome(line: str, number: int) -> pb.Outcome:
    try:
        data: dict[str, Any] = json.loads(line)
        outcome = pb.Outcome(request_id=str(data["request_id"]), observed_time=float(data.get("time", 0.0)))
        if "label" in data:
            outcome.class_label = int(data["label"])
        elif "value" in data:
            outcome.value = float(data["value"])
        elif "reward" in data:
            outcome.reward = float(data["reward"])
        else:
            raise KeyError("label, value or reward")
        return outcome
    except (ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(
            f"line {number}: {exc!r} (expected request_id and one of label, value, reward)"
        ) from exc


@connected
def report_outcomes(
    file: Annotated[
        Path, typer.Argument(help="JSON lines: request_id and one of label, value, reward; time optional.")
    ],
    *,
    conn: Connection,
) -> None:
    """Report ground truth for requests the gateway answered (idempotent per request)."""
    lines = [line for line in read_bytes(file).decode().splitlines() if line.strip()]
    outcomes = [_outcome(line, number) for number, line in enumerate(lines, 1)]
    totals = {"accepted": 0, "unmatched": 0, "late": 0, "duplicate": 0}
    with admin_stub(conn) as (stub, metadata):
        for start in range(0, len(outcomes), _BATCH):
            request = pb.ReportOutcomesRequest(outcomes=outcomes[start : start + _BATCH])
            answer = stub.ReportOutcomes(request, metadata=metadata, timeout=30)
            for key in totals:
                totals[key] += getattr(answer, key)
    if conn.as_json:
        typer.echo(json.dumps(totals))
    else:
        console.print(", ".join(f"{n} {key}" for key, n in totals.items()))


def _shown(value: float, percent: bool = False) -> str:
    if math.isnan(value):
        return "-"
    return f"{100 * value:.2f}%" if percent else f"{value:.4g}"


def _outcomes_view(response: pb.GetOutcomesResponse, model: str) -> Table:
    table = Table(title=f"outcomes of {model} ({response.unmatched} unmatched outcomes, any model)")
    for column in ("variant", "predictions", "labelled", "accuracy", "MAE", "RMSE", "mean reward", "coverage",
                   "late", "dup", "confidence", "top classes"):  # fmt: skip
        table.add_column(column)
    for v in response.variants:
        top = sorted(v.predicted_classes.items(), key=lambda item: -item[1])[:3]
        table.add_row(v.variant, str(v.predictions), str(v.labelled), _shown(v.accuracy, True), _shown(v.mae),
                      _shown(v.rmse), _shown(v.mean_reward), _shown(v.coverage, True), str(v.late), str(v.duplicate),
                      _shown(v.mean_top_probability), ", ".join(f"{c}: {n}" for c, n in top))  # fmt: skip
    return table


@connected
def outcomes(
    model: str,
    *,
    conn: Connection,
) -> None:
    """How each variant of MODEL fares against ground truth, and its label-free confidence."""
    response = call(conn, lambda s, m: s.GetOutcomes(pb.GetOutcomesRequest(model=model), metadata=m))
    show(conn, response, lambda r: _outcomes_view(r, model))


def _drift_view(response: pb.GetDriftResponse, limit: int) -> None:
    reference = f"reference: collecting ({response.collecting} samples so far)"
    if response.reference_source:
        reference = f"reference: {response.reference_source} ({response.reference_samples} samples)"
    console.print(f"[bold]{response.model}[/] {reference}; retraining triggers: {response.triggers_fired} sent, "
                  f"{response.triggers_skipped} in cooldown")  # fmt: skip
    for v in response.variants:
        state = "DRIFTED" if v.drifted else "ok"
        table = Table(title=f"variant {v.variant}: {state}, {100 * v.drifted_share:.0f}% of features drifted, "
                            f"{v.consecutive} window(s) in a row; {v.windows} windows, {v.collecting} samples in the "
                            "current one")  # fmt: skip
        for column in ("feature", "PSI", "KS p", "level", "drifted"):
            table.add_column(column)
        for f in v.features[:limit]:
            table.add_row(f.feature, f"{f.psi:.3f}", "-" if math.isnan(f.ks_p) else f"{f.ks_p:.2g}", f.level,
                          "yes" if f.drifted else "")  # fmt: skip
        show_table(table)


@connected
def drift(
    args: Annotated[list[str], typer.Argument(help="MODEL, or: reference MODEL FILE.npz", show_default=False)],
    limit: Annotated[int, typer.Option(help="Features shown per variant (the worst first).")] = 10,
    *,
    conn: Connection,
) -> None:
    """Drift of MODEL's inputs and outputs per variant, the worst features first; or upload a
    reference (`drift reference MODEL FILE.npz`: arrays by input name, first axis = records)."""
    if args and args[0] == "reference":
        if len(args) != 3:
            raise typer.BadParameter("usage: gatewayctl drift reference MODEL FILE.npz")
        request = pb.SetDriftReferenceRequest(model=args[1], npz=read_bytes(Path(args[2])))
        response = call(conn, lambda s, m: s.SetDriftReference(request, metadata=m))
    elif len(args) == 1:
        response = call(conn, lambda s, m: s.GetDrift(pb.GetDriftRequest(model=args[0]), metadata=m))
    else:
        raise typer.BadParameter("usage: gatewayctl drift MODEL | gatewayctl drift reference MODEL FILE.npz")
    show(conn, response, lambda r: _drift_view(r, limit))
