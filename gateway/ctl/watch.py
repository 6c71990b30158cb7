"""Following a rollout from a script: exit codes by phase, and output that is not a terminal's.

`gatewayctl rollout status` exits 0 on Succeeded, 1 on RolledBack, 2 on Paused or Aborted, and 4
while it still runs; `--watch` follows it until it ends or pauses and exits by the same table, as
do `rollout wait`, `rollout start --wait` and `apply --wait`, with 3 when their `--timeout` passes. Off
a terminal, `--watch` writes a line when something a person reads changes (phase, step, weights,
reason, a problem) and one per transition; with `--json`, one JSON object per line.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

from gateway.ctl.common import as_dict
from gateway_admin import admin_pb2 as pb

__all__ = ["EXIT_CODES", "RUNNING", "TIMED_OUT", "clock", "exit_code", "follow", "line_of", "transition_line"]

EXIT_CODES = {"Succeeded": 0, "RolledBack": 1, "Paused": 2, "Aborted": 2}  # where a watch stops
TIMED_OUT = 3  # a wait whose --timeout passed first
RUNNING = 4  # a plain `status` of a rollout still under way


def exit_code(status: pb.RolloutStatus, waited: bool = False) -> int:
    """The phase's code; a rollout still under way at the end of a wait timed it out."""
    return EXIT_CODES.get(status.phase, TIMED_OUT if waited else RUNNING)


def clock(seconds: float) -> str:
    """A unix time as the tables and lines show it (HH:MM:SS; "-" for none)."""
    return dt.datetime.fromtimestamp(seconds).strftime("%H:%M:%S") if seconds else "-"


def line_of(status: pb.RolloutStatus, now: float) -> str:
    weights = ",".join(f"{name}={weight}" for name, weight in sorted(status.weights.items())) or "-"
    step = f" step {status.step}/{len(status.steps)}" if status.step else ""
    shadow = f" shadow {status.shadow_fraction:g}" if status.shadow_fraction else ""
    problem = f" [problem: {status.problem}]" if status.problem else ""
    return f"{clock(now)} {status.model} {status.phase}{step} weights {weights}{shadow}: {status.reason}{problem}"


def transition_line(entry: pb.RolloutTransition) -> str:
    step = f" (step {entry.step})" if entry.step else ""
    return f"{clock(entry.time)} {getattr(entry, 'from')} -> {entry.to}{step}: {entry.reason}"


def _seen(status: pb.RolloutStatus) -> tuple[object, ...]:
    return (status.phase, status.step, tuple(sorted(status.weights.items())), status.shadow_fraction,
            status.reason, status.problem, len(status.history))  # fmt: skip


def follow(
    fetch: Callable[[], pb.RolloutStatus],
    write: Callable[[str], None],
    as_json: bool,
    interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    timeout_s: float | None = None,
) -> pb.RolloutStatus:
    """Poll until the rollout ends or pauses (or `timeout_s` passes), writing what changed; the
    last status."""
    give_up = None if timeout_s is None else clock() + timeout_s
    status = fetch()
    last: tuple[object, ...] | None = None
    printed = len(status.history)  # transitions before the watch began are in the first line
    while True:
        if _seen(status) != last:
            if as_json:
                write(json.dumps(as_dict(status), sort_keys=True))
            else:
                for entry in status.history[printed:]:
                    write(transition_line(entry))
                write(line_of(status, clock()))
            last, printed = _seen(status), len(status.history)
        if status.phase in EXIT_CODES or (give_up is not None and clock() >= give_up):
            return status
        sleep(interval_s)
        status = fetch()
