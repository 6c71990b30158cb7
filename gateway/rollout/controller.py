"""The rollout controller: the I/O around the state machine. Every tick, the leading gateway
reads each active rollout's window (the data plane's running totals and shadow counters),
lets the machine decide, and carries out what it returns: weights and shadows through the
RouteStore (so the admin API, Redis route sync and the data plane all see them), webhook
calls, a new window. Every transition and webhook outcome goes to the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit import AuditTrail, acting_as, current_actor
from gateway.errors import Conflict, InvalidRequest, ModelNotFound
from gateway.feedback.quality import QualityTotals
from gateway.rollout.cluster import Snapshot, shadow_totals, window
from gateway.rollout.gates import Evidence, Gate, gates_for
from gateway.rollout.machine import Action, CallHook, NewWindow, Notify, RolloutState, SetTraffic, start
from gateway.rollout.persistence import RolloutStates
from gateway.rollout.phases import IllegalTransition, Phase
from gateway.rollout.shadow_stats import ShadowCountersError, ShadowStats
from gateway.rollout.spec import KEEP_SECRETS, RolloutSpec
from gateway.rollout.totals import VariantTotals
from gateway.rollout.webhooks import call_hook
from gateway.routes import RouteError, RouteStore, ShadowPolicy, UnknownRoute

__all__ = ["RolloutController"]

log = logging.getLogger(__name__)
Totals = Callable[[], Mapping[tuple[str, str], VariantTotals]]
Quality = Callable[[], Mapping[tuple[str, str], QualityTotals]]
VERBS = ("start", "pause", "resume", "abort", "promote")


@dataclass(frozen=True, slots=True)
class _Mark:
    time: float
    cluster: Mapping[str, Snapshot]  # every replica's totals at the window's start
    candidate_quality: QualityTotals
    baseline_quality: QualityTotals


class RolloutController:
    def __init__(
        self,
        store: RouteStore,
        totals: Totals,
        shadows: ShadowStats,
        audit: AuditTrail,
        states: RolloutStates,
        tick_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        extra_gates: Sequence[Gate] = (),
        quality: Quality | None = None,
    ) -> None:
        """`quality`: predictions and outcomes per (model, variant), for the quality gates."""
        self._quality = quality or dict
        self._store, self._totals, self._shadows, self._audit = store, totals, shadows, audit
        self._states_store = states
        self._tick_s, self._clock, self._extra_gates = tick_s, clock, tuple(extra_gates)
        self._view: dict[str, RolloutState] = {}
        self._marks: dict[str, _Mark] = {}
        self._cluster: dict[str, Snapshot] = {}  # every replica's totals, as of this round
        self._unread: dict[str, str] = {}  # model -> why a replica's totals were left out this round
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._logged: set[str] = set()  # causes of failed rounds already logged (once each)
        self.leading = False

    # -- what the admin API calls ---------------------------------------------------------------

    def get(self, model: str) -> RolloutState:
        state = self._view.get(model)
        if state is None:
            raise ModelNotFound(f"no rollout of model '{model}' (gatewayctl rollout list shows them)")
        return state

    def list(self) -> list[RolloutState]:
        return [self._view[model] for model in sorted(self._view)]

    def owner(self, model: str) -> str | None:
        """The rollout that owns `model`'s route now, named for a person (a config reload leaves
        that route alone); None when no rollout does."""
        state = self._view.get(model)
        if state is None or not state.owns_route:
            return None
        return f"the rollout of {state.spec.candidate!r} ({state.phase.value}; gatewayctl rollout status {model})"

    async def refresh(self) -> None:
        """A follower reads what the leader saved (the leader's own view is the freshest)."""
        if not self.leading:
            self._view = await self._states_store.load()

    async def submit(self, verb: str, model: str, actor: str, spec: RolloutSpec | None = None,
                     reason: str = "") -> RolloutState:  # fmt: skip
        """Apply a person's command; a follower hands it to the leader and waits to see it applied."""
        command: dict[str, Any] = {"verb": verb, "model": model, "actor": actor, "reason": reason,
                   "spec": spec.model_dump(mode="json", context=KEEP_SECRETS) if spec else None,
                   "time": self._clock()}  # fmt: skip
        self._check(command)
        async with self._lock:
            if await self._states_store.lead():
                return await self._apply(command)
        await self._states_store.push(command)
        deadline = time.monotonic() + max(3 * self._tick_s, 3.0)
        while time.monotonic() < deadline:
            await asyncio.sleep(min(self._tick_s, 0.2))
            self._view = await self._states_store.load()
            state = self._view.get(model)
            if state is not None and state.updated >= command["time"]:
                return state
        raise Conflict(f"rollout {verb} for '{model}' was handed to the leading gateway, which has not applied it "
                       "yet: check `gatewayctl rollout status`")  # fmt: skip

    def _check(self, command: Mapping[str, Any]) -> None:
        """Refuse what cannot work before anything changes (on the leader or a follower)."""
        model, verb = command["model"], command["verb"]
        if verb not in VERBS:
            raise InvalidRequest(f"unknown rollout command {verb!r} (one of {', '.join(VERBS)})")
        existing = self._view.get(model)
        if verb != "start":
            self.get(model)
            return
        spec = RolloutSpec.model_validate(command["spec"])
        if existing is not None and not existing.done:
            raise Conflict(f"a rollout of '{model}' is {existing.phase.value}: abort it first "
                           f"(gatewayctl rollout abort {model})")  # fmt: skip
        try:
            route = self._store.require(model)
        except UnknownRoute as exc:
            raise ModelNotFound(f"{exc}: a rollout needs the model's route with both variants") from exc
        names = [v.name for v in route.variants]
        for role, name in (("candidate", spec.candidate), ("baseline", spec.baseline)):
            if name not in names:
                raise InvalidRequest(f"{role} {name!r} is not a variant of '{model}' (variants: {names})")

    async def _apply(self, command: Mapping[str, Any]) -> RolloutState:
        """The person's command is recorded as theirs; what the controller then does, as its own."""
        model, verb, now, actor = command["model"], command["verb"], self._clock(), command["actor"]
        self._check(command)
        why = command.get("reason") or f"{verb} by {actor}"
        if verb == "start":
            try:
                await self._exchange(model)  # the first window starts from every replica's totals now
            except ShadowCountersError as exc:
                raise Conflict(f"the data plane's counters for '{model}' cannot be read, so no window can "
                               f"start: {exc}") from exc  # fmt: skip
            state = start(RolloutSpec.model_validate(command["spec"]), now)
            self._view[model] = state
            self._audit.record(
                "rollout.start", model, after=state.spec.model_dump(mode="json"), reason=why, actor=actor
            )
            with acting_as(f"rollout/{model}"):
                await self._drive(state, now)
        else:
            state = self._view[model]
            try:
                actions = {"pause": state.pause, "resume": state.resume, "abort": state.abort,
                           "promote": state.promote_now}[verb](now, why)  # fmt: skip
            except IllegalTransition as exc:
                raise Conflict(str(exc)) from exc
            self._audit.record(f"rollout.{verb}", model, reason=why, actor=actor)
            with acting_as(f"rollout/{model}", why):
                await self._execute(state, actions, now)
                self._transition(state)
        await self._states_store.save(state)
        return state

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume saved rollouts, then advance them every tick until `stop`. (A flag, not only
        cancellation: a library that swallows a CancelledError mid-call must not keep it going.)"""
        while not self._stopping.is_set():
            try:
                async with self._lock:
                    await self._round()
            except Exception as exc:  # a bad round must not stop rollouts for good: retried next tick
                self._round_failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._tick_s)

    def stop(self) -> None:
        self._stopping.set()

    def _log_once(self, cause: str, exc: Exception | None = None) -> None:
        """A failure's cause logged the first time it happens (its traceback with it), not every tick."""
        if cause not in self._logged:
            self._logged.add(cause)
            log.error("rollout: %s (logged once per cause)", cause, exc_info=exc)

    def _round_failed(self, exc: Exception) -> None:
        """Logged once per cause, shown as each rollout's problem; the next tick tries again."""
        cause = f"{type(exc).__name__}: {exc}"
        self._log_once(f"round failed, retried every tick: {cause}", exc)
        for state in self._view.values():
            if state.owns_route:
                state.problem = f"the last round failed, retried every tick: {cause}"

    async def _round(self) -> None:
        leading = await self._states_store.lead()
        await self._exchange()
        if not leading:
            self.leading = False
            self._view, self._marks = await self._states_store.load(), {}
            return
        if not self.leading:  # just started, or took over: carry on from the saved state
            self.leading = True
            self._view, self._marks = await self._states_store.load(), {}
            for state in self._view.values():
                if state.owns_route and state.weights:
                    with acting_as(f"rollout/{state.spec.model}", "resumed after a restart or a change of leader"):
                        self._set_traffic(state, SetTraffic(state.weights, state.shadow_fraction))
        for command in await self._states_store.take():
            try:
                await self._apply(command)
            except Exception as exc:  # a stale command from a follower: logged, not fatal
                log.warning("rollout %s of %s by %s not applied: %s", command.get("verb"), command.get("model"),
                            command.get("actor"), exc)  # fmt: skip
        for state in list(self._view.values()):
            state.problem = self._unread.get(state.spec.model, "")
            stopped = state.owns_route and await self._reconcile(state)
            if state.active:
                with acting_as(f"rollout/{state.spec.model}"):
                    await self._drive(state, self._clock())
            if state.active or stopped:
                await self._states_store.save(state)

    async def _reconcile(self, state: RolloutState) -> bool:
        """While a rollout runs it owns its variants' weights and shadow: a change made under it
        (a config reload, a person) is put back, as a Kubernetes controller reconciles. True when
        the rollout had to stop because its variants are gone."""
        route = self._store.get(state.spec.model)
        if route is None or not state.weights:
            return False
        names = {v.name for v in route.variants}
        gone = [name for name in (state.spec.baseline, state.spec.candidate) if name not in names]
        if gone:  # nothing to roll out to or back to: stopped, for a person to look at
            log.error("rollout %s aborted: variant(s) %s no longer in its route", state.spec.model, gone)
            with acting_as(f"rollout/{state.spec.model}"):
                actions = state.abort(self._clock(), f"aborted: variant(s) {gone} are no longer in the route")
                await self._execute(state, [a for a in actions if not isinstance(a, SetTraffic)], self._clock())
                self._transition(state)
            return True
        weights = {v.name: v.weight for v in route.variants}
        shadow = next((s.fraction for s in route.shadows if s.variant == state.spec.candidate), 0.0)
        expected = {name: 0 for name in weights} | state.weights
        if weights != expected or shadow != state.shadow_fraction:
            with acting_as(f"rollout/{state.spec.model}", "reconciled: the route changed under the rollout"):
                self._set_traffic(state, SetTraffic(state.weights, state.shadow_fraction))
        return False

    async def _drive(self, state: RolloutState, now: float) -> None:
        gates = gates_for(state.spec.gates, state.spec.shadow_requests, self._extra_gates)
        for _ in range(8):  # a hook that passes can let it move on in the same tick; one that refuses, not
            before = (state.phase, state.step, frozenset(state.passed))
            actions = state.tick(now, self._evidence(state, now), gates)
            await self._execute(state, actions, now)
            if (
                not any(isinstance(a, CallHook) for a in actions)
                or (state.phase, state.step, frozenset(state.passed)) == before
            ):
                break
        self._transition(state)

    def _transition(self, state: RolloutState) -> None:
        """Every transition the machine made, once, into the audit trail."""
        for entry in state.history[state.audited :]:
            self._audit.record(
                "rollout.transition", state.spec.model,
                before={"phase": entry["from"]},
                after={"phase": entry["to"], "step": entry["step"] + 1, "weights": state.weights},
                reason=entry["reason"],
            )  # fmt: skip
        state.audited = len(state.history)

    def _evidence(self, state: RolloutState, now: float) -> Evidence | None:
        if state.phase not in (Phase.SHADOW, Phase.CANARY):
            return None
        mark = self._marks.get(state.spec.model)
        if mark is None:  # after a restart or a change of leader: a fresh window
            self._marks[state.spec.model] = self._mark(state, now)
            state.window_start, state.window_end = now, now + state.spec.interval_s
            return None
        spec = state.spec
        candidate, shadow = window(self._cluster, mark.cluster, (spec.model, spec.candidate))
        baseline, _ = window(self._cluster, mark.cluster, (spec.model, spec.baseline))
        candidate_quality, baseline_quality = self._quality_of(spec)
        return Evidence(mark.time, now, candidate, baseline, shadow,
                        candidate_quality.minus(mark.candidate_quality),
                        baseline_quality.minus(mark.baseline_quality))  # fmt: skip

    def _quality_of(self, spec: RolloutSpec) -> tuple[QualityTotals, QualityTotals]:
        quality = self._quality()
        return (quality.get((spec.model, spec.candidate), QualityTotals()),
                quality.get((spec.model, spec.baseline), QualityTotals()))  # fmt: skip

    def _mark(self, state: RolloutState, now: float) -> _Mark:
        # The cluster's totals are replaced each round, never changed in place: no copy needed.
        return _Mark(now, self._cluster, *self._quality_of(state.spec))

    async def _exchange(self, *extra: str) -> None:
        """This replica's totals of the models under a rollout out, every replica's in."""
        models = {s.spec.model for s in self._view.values() if s.owns_route} | set(extra)
        # Without a rollout there is nothing to count: the data plane's snapshot is not even read.
        totals = {key: value for key, value in self._totals().items() if key[0] in models} if models else {}
        mine = Snapshot(totals, shadow_totals(self._shadows, models))
        shared = await self._states_store.exchange(mine.to_json())
        cluster: dict[str, Snapshot] = {}
        self._unread = {}
        for owner, text in shared.items():
            try:
                cluster[owner] = Snapshot.from_json(text)
            except (ValueError, TypeError, KeyError) as exc:  # one replica's bad totals: left out, not fatal
                cause = f"the totals of replica {owner} are unreadable and left out: {exc}"
                self._log_once(cause)
                self._unread = dict.fromkeys(models, cause)
        self._cluster = cluster

    async def _execute(self, state: RolloutState, actions: Sequence[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, SetTraffic):
                self._set_traffic(state, action)
            elif isinstance(action, NewWindow):
                self._marks[state.spec.model] = self._mark(state, now)
            elif isinstance(action, CallHook):
                ok, detail = await self._hooks(state, action.kind)
                await self._execute(state, state.hook_answered(action.kind, ok, detail, now), now)
            elif isinstance(action, Notify):
                await self._hooks(state, action.kind)

    async def _hooks(self, state: RolloutState, kind: str) -> tuple[bool, str]:
        hooks = state.spec.hooks(kind)
        if not hooks:
            return True, "no webhook"
        payload = self.payload(state)
        outcomes = [await call_hook(hook, payload) for hook in hooks]
        for outcome in outcomes:
            self._audit.record("rollout.webhook", state.spec.model, after={
                "name": outcome.name, "type": outcome.kind, "ok": outcome.ok, "status": outcome.status,
                "elapsed_ms": round(outcome.elapsed_ms, 1)}, reason=outcome.detail)  # fmt: skip
        return all(o.ok for o in outcomes), "; ".join(o.detail for o in outcomes)

    @staticmethod
    def payload(state: RolloutState) -> dict[str, Any]:
        spec = state.spec
        return {
            "model": spec.model, "candidate": spec.candidate, "baseline": spec.baseline,
            "phase": state.phase.value, "step": state.step + 1, "steps": list(spec.steps),
            "weights": state.weights, "failures": state.failures, "reason": state.reason,
            "gates": [g.to_dict() for g in state.gates], "time": time.time(),
        }  # fmt: skip

    def _set_traffic(self, state: RolloutState, traffic: SetTraffic) -> None:
        model, candidate = state.spec.model, state.spec.candidate
        actor, reason = current_actor()
        try:
            with acting_as(actor or f"rollout/{model}", reason or state.reason):
                route = self._store.require(model)
                weights = {v.name: 0 for v in route.variants} | dict(traffic.weights)
                self._store.set_weights(model, weights)
                current = next((s for s in route.shadows if s.variant == candidate), None)
                if traffic.shadow_fraction > 0 or current is not None:
                    policy = ShadowPolicy(candidate, traffic.shadow_fraction, current.max_inflight if current else 16)
                    if policy != current:
                        self._store.set_shadow(model, policy)
            log.info("rollout %s: weights %s, shadow %.2f", model, weights, traffic.shadow_fraction)
        except (RouteError, UnknownRoute) as exc:
            log.error("rollout %s: traffic not changed: %s", model, exc)
            state.reason = f"traffic not changed: {exc}"
