"""The rollout state machine, pure: the controller feeds it the time, the window's evidence and
webhook answers, and carries out the actions it returns (traffic changes, webhook calls, a new
window). The clock is whatever the caller passes as `now`.

    Pending ─▶ Shadow ─▶ Canary(0) ─▶ … ─▶ Canary(n-1) ─▶ Promoting ─▶ Succeeded
       └──────────────────┘   any active phase ─▶ Paused | RolledBack | Aborted

A window passes only after its whole interval with every gate passing and at least
`min_requests` per variant; it fails as soon as there is that much data and a gate fails (a
failure is counted and a fresh window starts; past `failure_limit` the rollout rolls back). Too
little data extends the window; after `max_extensions` the rollout pauses for a person. It never
promotes on too little data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.rollout.gates import Evidence, Gate, GateResult, Verdict
from gateway.rollout.phases import ACTIVE, TERMINAL, IllegalTransition, Phase, check_transition
from gateway.rollout.spec import KEEP_SECRETS, RolloutSpec

__all__ = ["CallHook", "NewWindow", "Notify", "RolloutState", "SetTraffic", "start"]

_GATING = {Phase.PENDING: ("confirm-rollout", "pre-rollout"), Phase.PROMOTING: ("confirm-promotion",)}


@dataclass(frozen=True, slots=True)
class SetTraffic:
    """Weights for the two variants (every other variant gets 0), and the candidate's shadow share."""

    weights: Mapping[str, int]
    shadow_fraction: float


@dataclass(frozen=True, slots=True)
class CallHook:
    """Call the webhooks of this kind and answer with `RolloutState.hook_answered`."""

    kind: str


@dataclass(frozen=True, slots=True)
class Notify:
    """Call the webhooks of this kind; their answer changes nothing."""

    kind: str


@dataclass(frozen=True, slots=True)
class NewWindow:
    """Take the totals now: the next evidence counts from here."""


Action = SetTraffic | CallHook | Notify | NewWindow


@dataclass
class RolloutState:
    spec: RolloutSpec
    phase: Phase = Phase.PENDING
    step: int = -1  # index into spec.steps while in Canary
    weights: dict[str, int] = field(default_factory=dict)
    shadow_fraction: float = 0.0
    window_start: float = 0.0
    window_end: float = 0.0
    extensions: int = 0
    failures: int = 0
    gates: list[GateResult] = field(default_factory=list)  # the last values of every gate
    reason: str = "created"
    resume_to: Phase | None = None
    passed: set[str] = field(default_factory=set)  # gating hooks passed in this phase
    history: list[dict[str, Any]] = field(default_factory=list)
    audited: int = 0  # history entries already in the audit trail
    created: float = 0.0
    updated: float = 0.0
    problem: str = ""  # what kept the controller's last round from judging it ("" when it ran)

    # -- what the controller calls ---------------------------------------------------------------

    def tick(self, now: float, evidence: Evidence | None, gates: Sequence[Gate]) -> list[Action]:
        """Decide what the time and the window so far call for."""
        if self.phase in _GATING:
            for kind in _GATING[self.phase]:
                if self.spec.hooks(kind) and kind not in self.passed:
                    return [CallHook(kind)]
            return self._enter_first(now) if self.phase is Phase.PENDING else self._promote(now, "every step passed")
        if self.phase not in (Phase.SHADOW, Phase.CANARY) or evidence is None:
            return []
        shadow = self.phase is Phase.SHADOW
        results = [gate.evaluate(evidence) for gate in gates if gate.shadow_phase == shadow]
        self.gates = results
        failing = [r for r in results if r.verdict is Verdict.FAIL]
        enough = shadow or (
            evidence.candidate.requests >= self.spec.min_requests
            and evidence.baseline.requests >= self.spec.min_requests
        )
        if failing and enough:
            return self._failed(now, evidence, failing)
        if shadow and results and all(r.verdict is Verdict.PASS for r in results):
            return self._window_passed(now)
        if now < self.window_end:
            return []
        if not enough or any(r.verdict is Verdict.INCONCLUSIVE for r in results):
            return self._inconclusive(now, evidence)
        return self._window_passed(now)

    def hook_answered(self, kind: str, ok: bool, detail: str, now: float) -> list[Action]:
        self.updated = now
        if kind == "rollback":  # Flagger: a 2xx from a rollback hook stops the rollout
            return self._roll_back(now, f"the rollback webhook asked for it: {detail}") if ok else []
        if ok:
            self.passed.add(kind)
            if kind == "rollout":
                return self._advance(now)
            return []
        if kind == "pre-rollout" or kind == "rollout":
            self.failures += 1
            reason = f"webhook {kind} failed: {detail}"
            if self.failures > self.spec.failure_limit:
                return self._roll_back(now, f"{reason} ({self.failures} failures, limit {self.spec.failure_limit})")
            self.reason = reason
            return [NewWindow()] if kind == "rollout" and self._restart_window(now) else []
        self.reason = f"held: webhook {kind} did not confirm ({detail})"  # confirm-*: asked again next tick
        return []

    def pause(self, now: float, reason: str) -> list[Action]:
        check_transition(self.phase, Phase.PAUSED)
        self.resume_to = self.phase
        return self._move(Phase.PAUSED, now, reason)

    def resume(self, now: float, reason: str) -> list[Action]:
        if self.phase is not Phase.PAUSED:
            raise IllegalTransition(f"only a paused rollout resumes (this one is {self.phase.value})")
        target = self.resume_to or Phase.PENDING
        self.extensions, self.resume_to = 0, None
        actions = self._move(target, now, reason)
        return [*actions, NewWindow()] if self._restart_window(now) else actions

    def abort(self, now: float, reason: str) -> list[Action]:
        check_transition(self.phase, Phase.ABORTED)
        return [self._to_baseline(), *self._move(Phase.ABORTED, now, reason), Notify("post-rollout")]

    def promote_now(self, now: float, reason: str) -> list[Action]:
        """A person skips the rest: promoted at once, without confirm-promotion."""
        actions = [] if self.phase is Phase.PROMOTING else self._move(Phase.PROMOTING, now, reason)
        return [*actions, *self._promote(now, reason)]

    # -- the steps -------------------------------------------------------------------------------

    def _move(self, target: Phase, now: float, reason: str) -> list[Action]:
        check_transition(self.phase, target)
        self.history.append({"time": now, "from": self.phase.value, "to": target.value, "step": self.step,
                             "reason": reason})  # fmt: skip
        self.phase, self.reason, self.updated = target, reason, now
        self.passed = set()
        return [Notify("event")]

    def _restart_window(self, now: float) -> bool:
        if self.phase not in (Phase.SHADOW, Phase.CANARY):
            return False
        self.window_start, self.window_end = now, now + self.spec.interval_s
        return True

    def _traffic(self, candidate_share: int, shadow_fraction: float) -> SetTraffic:
        spec = self.spec
        self.weights = {spec.baseline: 100 - candidate_share, spec.candidate: candidate_share}
        self.shadow_fraction = shadow_fraction
        return SetTraffic(dict(self.weights), shadow_fraction)

    def _to_baseline(self) -> SetTraffic:
        return self._traffic(0, 0.0)

    def _enter_first(self, now: float) -> list[Action]:
        if self.spec.shadow_requests > 0:
            actions = self._move(Phase.SHADOW, now, "confirmed; shadow phase")
            self._restart_window(now)
            return [self._traffic(0, self.spec.shadow_fraction), *actions, NewWindow()]
        return self._next_step(now, "confirmed; first canary step")

    def _next_step(self, now: float, reason: str) -> list[Action]:
        if self.step + 1 >= len(self.spec.steps):
            return [*self._move(Phase.PROMOTING, now, reason), *self.tick(now, None, ())]
        actions = self._move(Phase.CANARY, now, reason)
        self.step += 1
        self.extensions = 0
        self._restart_window(now)
        return [self._traffic(self.spec.steps[self.step], 0.0), *actions, NewWindow()]

    def _window_passed(self, now: float) -> list[Action]:
        self.updated = now
        if self.spec.hooks("rollback") and "rollback" not in self.passed:
            self.passed.add("rollback")  # asked once per window
            return [CallHook("rollback")]
        if self.spec.hooks("rollout"):
            return [CallHook("rollout")]
        return self._advance(now)

    def _advance(self, now: float) -> list[Action]:
        step = f"step {self.step + 1} ({self.spec.steps[self.step]}%)"
        where = "shadow phase" if self.phase is Phase.SHADOW else step
        return self._next_step(now, f"{where} passed: " + "; ".join(r.detail for r in self.gates))

    def _failed(self, now: float, evidence: Evidence, failing: list[GateResult]) -> list[Action]:
        self.failures += 1
        names = ", ".join(r.gate for r in failing)
        numbers = "; ".join(r.detail for r in failing)
        since = dt.datetime.fromtimestamp(evidence.since, dt.UTC).strftime("%H:%M:%S")
        window = f"window of {evidence.until - evidence.since:.1f}s from {since} UTC"
        if self.failures > self.spec.failure_limit:
            reason = (f"gate {names} failed: {numbers} ({window}; {self.failures} failed windows, "
                      f"limit {self.spec.failure_limit})")  # fmt: skip
            return self._roll_back(now, reason)
        self.reason = f"gate {names} failed ({self.failures} of {self.spec.failure_limit} allowed): {numbers}"
        self.updated = now
        self.passed.discard("rollback")
        self._restart_window(now)
        return [NewWindow()]

    def _inconclusive(self, now: float, evidence: Evidence) -> list[Action]:
        self.extensions += 1
        if self.phase is Phase.SHADOW:
            seen = f"{evidence.shadow.compared} of {self.spec.shadow_requests} paired answers"
        else:
            seen = (f"candidate {evidence.candidate.requests}, baseline {evidence.baseline.requests} requests "
                    f"(min {self.spec.min_requests} each)")  # fmt: skip
        if self.extensions > self.spec.max_extensions:
            return self.pause(now, f"inconclusive after {self.spec.max_extensions} extensions: {seen}")
        self.window_end += self.spec.interval_s
        self.reason = f"inconclusive: {seen}; window extended ({self.extensions} of {self.spec.max_extensions})"
        self.updated = now
        return []

    def _promote(self, now: float, reason: str) -> list[Action]:
        self.step = len(self.spec.steps) - 1
        traffic = self._traffic(100, 0.0)
        return [traffic, *self._move(Phase.SUCCEEDED, now, f"promoted: {reason}"), Notify("post-rollout")]

    def _roll_back(self, now: float, reason: str) -> list[Action]:
        return [self._to_baseline(), *self._move(Phase.ROLLED_BACK, now, reason), Notify("post-rollout")]

    # -- persistence -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase in TERMINAL

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    @property
    def owns_route(self) -> bool:
        """Under way or paused: the rollout owns its variants' weights and the candidate's shadow."""
        return self.active or self.phase is Phase.PAUSED

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json", context=KEEP_SECRETS), "phase": self.phase.value,
            "step": self.step, "weights": self.weights, "shadow_fraction": self.shadow_fraction,
            "window_start": self.window_start, "window_end": self.window_end, "extensions": self.extensions,
            "failures": self.failures, "gates": [g.to_dict() for g in self.gates], "reason": self.reason,
            "resume_to": self.resume_to.value if self.resume_to else None, "passed": sorted(self.passed),
            "history": self.history, "audited": self.audited, "created": self.created, "updated": self.updated,
            "problem": self.problem,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        return cls(
            spec=RolloutSpec.model_validate(data["spec"]), phase=Phase(data["phase"]), step=data["step"],
            weights=dict(data["weights"]), shadow_fraction=data["shadow_fraction"],
            window_start=data["window_start"], window_end=data["window_end"], extensions=data["extensions"],
            failures=data["failures"], gates=[GateResult.from_dict(g) for g in data["gates"]],
            reason=data["reason"], resume_to=Phase(data["resume_to"]) if data["resume_to"] else None,
            passed=set(data["passed"]), history=list(data["history"]), audited=data.get("audited", 0),
            created=data["created"], updated=data["updated"], problem=data.get("problem", ""),
        )  # fmt: skip


def start(spec: RolloutSpec, now: float) -> RolloutState:
    return RolloutState(spec=spec, created=now, updated=now, weights={})
