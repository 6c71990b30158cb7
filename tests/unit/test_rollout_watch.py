"""Following a rollout off a terminal: exit codes by phase, a line per change, JSON lines."""

from __future__ import annotations

import json

import pytest

from gateway.ctl.watch import exit_code, follow
from gateway_admin import admin_pb2 as pb


def _status(phase: str, step: int = 0, weights: dict[str, int] | None = None, reason: str = "",
            moves: int = 0) -> pb.RolloutStatus:  # fmt: skip
    history = [pb.RolloutTransition(time=1.0 + i, to=phase, step=step, reason=f"move {i}", **{"from": "Canary"})
               for i in range(moves)]  # fmt: skip
    return pb.RolloutStatus(model="m", phase=phase, step=step, steps=[20, 50], weights=weights or {"1": 100},
                            reason=reason, history=history)  # fmt: skip


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Succeeded", 0),
        ("RolledBack", 1),
        ("Paused", 2),
        ("Aborted", 2),
        ("Shadow", 4),
        ("Canary", 4),
        ("Pending", 4),
        ("Promoting", 4),
    ],
)
def test_every_phase_has_its_exit_code(phase: str, code: int) -> None:
    assert exit_code(_status(phase)) == code


def _run(statuses: list[pb.RolloutStatus], as_json: bool) -> tuple[list[str], pb.RolloutStatus, int]:
    feed = iter(statuses)
    lines: list[str] = []
    sleeps: list[float] = []
    last = follow(lambda: next(feed), lines.append, as_json, sleep=sleeps.append, clock=lambda: 0.0)
    return lines, last, len(sleeps)


SEQUENCE = [
    _status("Shadow", reason="started"),
    _status("Shadow", reason="started"),  # nothing new: no line
    _status("Canary", 1, {"1": 80, "2": 20}, "shadow passed", moves=1),
    _status("Canary", 2, {"1": 50, "2": 50}, "step passed", moves=2),
    _status("RolledBack", 2, {"1": 100, "2": 0}, "gate errors failed", moves=3),
]


def test_off_a_terminal_each_change_is_a_line_and_each_transition_too() -> None:
    lines, last, polls = _run(SEQUENCE, as_json=False)
    assert last.phase == "RolledBack" and exit_code(last) == 1 and polls == 4
    assert [line.split(" ", 2)[2].split(":")[0] for line in lines if " -> " not in line] == [
        "Shadow weights 1=100",
        "Canary step 1/2 weights 1=80,2=20",
        "Canary step 2/2 weights 1=50,2=50",
        "RolledBack step 2/2 weights 1=100,2=0",
    ]
    assert sum(" -> " in line for line in lines) == 3  # every transition once
    assert lines[-1].endswith("gate errors failed")


def test_json_watch_is_one_object_per_line_until_the_end() -> None:
    lines, last, _ = _run(SEQUENCE, as_json=True)
    objects = [json.loads(line) for line in lines]
    assert [o["phase"] for o in objects] == ["Shadow", "Canary", "Canary", "RolledBack"]
    assert exit_code(last) == 1


def test_a_rollout_already_ended_prints_once_and_stops() -> None:
    lines, last, polls = _run([_status("Succeeded", 2, {"2": 100}, "promoted", moves=4)], as_json=False)
    assert len(lines) == 1 and polls == 0 and exit_code(last) == 0


def test_a_wait_gives_up_at_its_timeout_with_its_own_code() -> None:
    now = [0.0]
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        now[0] += seconds

    last = follow(lambda: _status("Canary", 1), lambda _: None, False, interval_s=1.0, sleep=sleep,
                  clock=lambda: now[0], timeout_s=3.0)  # fmt: skip
    assert last.phase == "Canary" and len(polls) == 3
    assert exit_code(last, waited=True) == 3 and exit_code(last) == 4
    assert exit_code(_status("Succeeded"), waited=True) == 0
