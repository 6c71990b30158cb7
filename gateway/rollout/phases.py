"""A rollout's phases and the only transitions between them; anything else is a bug, raised."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "TERMINAL", "IllegalTransition", "Phase", "check_transition"]


class Phase(StrEnum):
    PENDING = "Pending"  # waiting for confirm-rollout / pre-rollout
    SHADOW = "Shadow"  # the candidate gets copies; its answers are compared with the baseline's
    CANARY = "Canary"  # the candidate gets steps[i] percent of the traffic
    PROMOTING = "Promoting"  # every step passed; waiting for confirm-promotion
    SUCCEEDED = "Succeeded"
    PAUSED = "Paused"  # by a person, or because the data stayed too thin to decide
    ROLLED_BACK = "RolledBack"  # a gate failed past the failure limit, or the rollback webhook asked
    ABORTED = "Aborted"  # by a person


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED})
ACTIVE = frozenset({Phase.PENDING, Phase.SHADOW, Phase.CANARY, Phase.PROMOTING})

_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.SHADOW, Phase.CANARY, Phase.PROMOTING}),
    Phase.SHADOW: frozenset({Phase.CANARY, Phase.PROMOTING}),
    Phase.CANARY: frozenset({Phase.CANARY, Phase.PROMOTING}),
    Phase.PROMOTING: frozenset({Phase.SUCCEEDED}),
    Phase.PAUSED: frozenset(ACTIVE),  # resume, or a person promotes
}
for _phase in ACTIVE:  # from every active phase: held, failed or stopped
    _ALLOWED[_phase] = _ALLOWED[_phase] | {Phase.PAUSED, Phase.ROLLED_BACK, Phase.ABORTED}
_ALLOWED[Phase.PAUSED] = _ALLOWED[Phase.PAUSED] | {Phase.ABORTED, Phase.ROLLED_BACK}
for _phase in TERMINAL:
    _ALLOWED[_phase] = frozenset()


class IllegalTransition(ValueError):
    """A transition the table does not have (e.g. resuming a rollout that succeeded)."""


def check_transition(source: Phase, target: Phase) -> None:
    if target not in _ALLOWED[source]:
        raise IllegalTransition(f"a rollout cannot go from {source.value} to {target.value}")
