"""The rollout state machine and its gates, fed made-up windows and an injected clock."""

# mypy narrows `state.phase` after one assert and does not see the next call change it.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.rollout.gates import (
    ErrorsGate,
    ErrorsSettings,
    Evidence,
    GateSettings,
    LatencyGate,
    LatencySettings,
    ShadowGate,
    ShadowSettings,
    Verdict,
    gates_for,
    one_sided_p_value,
)
from gateway.rollout.machine import CallHook, NewWindow, Notify, RolloutState, SetTraffic, start
from gateway.rollout.phases import ACTIVE, TERMINAL, IllegalTransition, Phase, check_transition
from gateway.rollout.shadow_stats import ABS_ERROR_BUCKETS, ShadowCounters
from gateway.rollout.spec import RolloutSpec, WebhookSpec
from gateway.rollout.totals import LATENCY_BUCKETS, Latencies, VariantTotals, totals_from_core


def totals(ok: int, failed: int = 0, seconds: float = 0.002) -> VariantTotals:
    """`ok` + `failed` answers all taking `seconds`, counted as the core counts them."""
    if ok + failed == 0:
        return VariantTotals()
    codes = {code: n for code, n in (("OK", ok), ("UNAVAILABLE", failed)) if n}
    bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)  # the first bound >= seconds; past all: +Inf
    buckets = tuple(ok + failed if i == bucket else 0 for i in range(len(LATENCY_BUCKETS)))
    return VariantTotals(codes, buckets, ok + failed)


def spec(**overrides: object) -> RolloutSpec:
    base = {"model": "m", "candidate": "2", "baseline": "1", "steps": (10, 50), "interval_s": 10.0,
            "min_requests": 100}  # fmt: skip
    return RolloutSpec.model_validate(base | overrides)


def evidence(candidate: VariantTotals, baseline: VariantTotals, shadow: ShadowCounters | None = None) -> Evidence:
    return Evidence(0.0, 1.0, candidate, baseline, shadow or ShadowCounters())


GATES = gates_for(GateSettings(), 0)


def test_a_healthy_candidate_walks_every_step_and_is_promoted() -> None:
    state = start(spec(), 0.0)
    actions = state.tick(0.0, None, GATES)
    assert state.phase is Phase.CANARY and state.step == 0
    assert SetTraffic({"1": 90, "2": 10}, 0.0) in actions and NewWindow() in actions
    healthy = evidence(totals(200), totals(1800))
    assert state.tick(5.0, healthy, GATES) == []  # the window is not over: nothing yet
    state.tick(10.0, healthy, GATES)
    assert state.phase is Phase.CANARY and state.step == 1 and state.weights == {"1": 50, "2": 50}
    actions = state.tick(20.0, healthy, GATES)
    assert state.phase is Phase.SUCCEEDED and state.weights == {"1": 0, "2": 100}
    assert Notify("post-rollout") in actions
    assert [h["to"] for h in state.history] == ["Canary", "Canary", "Promoting", "Succeeded"]


def test_a_failing_gate_past_the_limit_rolls_back_with_its_numbers() -> None:
    state = start(spec(failure_limit=1), 0.0)
    state.tick(0.0, None, GATES)
    bad = evidence(totals(150, failed=50), totals(1800))
    assert state.tick(3.0, bad, GATES) == [NewWindow()]  # first failure: tolerated, a fresh window
    assert state.failures == 1 and state.phase is Phase.CANARY and state.window_end == 13.0
    actions = state.tick(5.0, bad, GATES)
    assert state.phase is Phase.ROLLED_BACK and state.weights == {"1": 100, "2": 0}
    assert SetTraffic({"1": 100, "2": 0}, 0.0) in actions
    assert "gate errors failed" in state.reason and "25.00%" in state.reason


def test_a_slow_candidate_fails_the_latency_gate() -> None:
    state = start(spec(failure_limit=0), 0.0)
    state.tick(0.0, None, GATES)
    state.tick(4.0, evidence(totals(200, seconds=0.2), totals(1800, seconds=0.002)), GATES)
    assert state.phase is Phase.ROLLED_BACK and "gate latency failed" in state.reason


def test_too_little_traffic_extends_then_pauses_and_never_promotes() -> None:
    state = start(spec(max_extensions=2), 0.0)
    state.tick(0.0, None, GATES)
    thin = evidence(totals(20), totals(180))
    for now in (10.0, 20.0):
        assert state.tick(now, thin, GATES) == []
        assert state.phase is Phase.CANARY and "inconclusive" in state.reason
    assert state.window_end == 30.0
    state.tick(30.0, thin, GATES)
    assert state.phase is Phase.PAUSED and state.resume_to is Phase.CANARY
    assert state.tick(100.0, evidence(totals(500), totals(500)), GATES) == []  # paused: holds
    actions = state.resume(101.0, "more traffic now")
    assert state.phase is Phase.CANARY and NewWindow() in actions and state.window_end == 111.0


def test_the_shadow_phase_needs_its_pairs_then_judges_agreement() -> None:
    state = start(spec(shadow_requests=50, failure_limit=0), 0.0)
    gates = gates_for(GateSettings(), 50)
    actions = state.tick(0.0, None, gates)
    assert state.phase is Phase.SHADOW and SetTraffic({"1": 100, "2": 0}, 1.0) in actions
    few = ShadowCounters(compared=10, argmax_compared=10)
    assert state.tick(1.0, evidence(VariantTotals(), VariantTotals(), few), gates) == []
    agreeing = ShadowCounters(compared=60, argmax_compared=60)
    state.tick(2.0, evidence(VariantTotals(), VariantTotals(), agreeing), gates)
    assert state.phase is Phase.CANARY and state.shadow_fraction == 0.0
    state = start(spec(shadow_requests=50, failure_limit=0), 0.0)
    state.tick(0.0, None, gates)
    disagreeing = ShadowCounters(compared=60, argmax_compared=60, argmax_disagreements=6)
    state.tick(2.0, evidence(VariantTotals(), VariantTotals(), disagreeing), gates)
    assert state.phase is Phase.ROLLED_BACK and "gate shadow failed" in state.reason and "90.00%" in state.reason


def hook(kind: str) -> WebhookSpec:
    return WebhookSpec(name=kind, type=kind, url="http://127.0.0.1:1/")  # type: ignore[arg-type]


def test_webhooks_gate_the_start_and_the_promotion() -> None:
    hooks = tuple(hook(k) for k in ("confirm-rollout", "pre-rollout", "rollout", "confirm-promotion"))
    state = start(spec(steps=(50,), webhooks=hooks), 0.0)
    assert state.tick(0.0, None, GATES) == [CallHook("confirm-rollout")]
    assert state.hook_answered("confirm-rollout", False, "HTTP 503", 0.0) == []
    assert state.phase is Phase.PENDING and "held" in state.reason
    assert state.tick(1.0, None, GATES) == [CallHook("confirm-rollout")]
    state.hook_answered("confirm-rollout", True, "HTTP 200", 1.0)
    assert state.tick(1.0, None, GATES) == [CallHook("pre-rollout")]
    state.hook_answered("pre-rollout", True, "HTTP 200", 1.0)
    state.tick(1.0, None, GATES)
    assert state.phase is Phase.CANARY
    assert state.tick(11.0, evidence(totals(500), totals(500)), GATES) == [CallHook("rollout")]
    state.hook_answered("rollout", True, "HTTP 200", 11.0)
    assert state.phase is Phase.PROMOTING
    assert state.tick(12.0, None, GATES) == [CallHook("confirm-promotion")]
    state.hook_answered("confirm-promotion", False, "HTTP 500", 12.0)
    assert state.phase is Phase.PROMOTING and state.weights == {"1": 50, "2": 50}  # held
    state.tick(13.0, None, GATES)
    state.hook_answered("confirm-promotion", True, "HTTP 200", 13.0)
    state.tick(13.0, None, GATES)
    assert state.phase is Phase.SUCCEEDED


def test_a_rollback_webhook_answering_2xx_rolls_back() -> None:
    state = start(spec(steps=(50,), webhooks=(hook("rollback"),)), 0.0)
    state.tick(0.0, None, GATES)
    assert state.tick(10.0, evidence(totals(500), totals(500)), GATES) == [CallHook("rollback")]
    state.hook_answered("rollback", True, "HTTP 200", 10.0)
    assert state.phase is Phase.ROLLED_BACK and "rollback webhook" in state.reason


def test_people_pause_resume_abort_and_promote() -> None:
    state = start(spec(), 0.0)
    state.tick(0.0, None, GATES)
    state.pause(1.0, "by hand")
    with pytest.raises(IllegalTransition):
        state.pause(2.0, "again")
    state.resume(3.0, "go on")
    state.promote_now(4.0, "ship it")
    assert state.phase is Phase.SUCCEEDED and state.weights == {"1": 0, "2": 100}
    with pytest.raises(IllegalTransition):
        state.abort(5.0, "too late")
    other = start(spec(), 0.0)
    other.tick(0.0, None, GATES)
    other.abort(1.0, "no")
    assert other.phase is Phase.ABORTED and other.weights == {"1": 100, "2": 0}


def test_state_survives_a_round_trip() -> None:
    state = start(spec(shadow_requests=5), 0.0)
    state.tick(0.0, None, gates_for(GateSettings(), 5))
    again = RolloutState.from_dict(state.to_dict())
    assert again.to_dict() == state.to_dict()


@given(st.sampled_from(list(Phase)), st.sampled_from(list(Phase)))
def test_terminal_phases_go_nowhere_and_active_ones_can_always_stop(source: Phase, target: Phase) -> None:
    if source in TERMINAL:
        with pytest.raises(IllegalTransition):
            check_transition(source, target)
    if source in ACTIVE and target in (Phase.ABORTED, Phase.ROLLED_BACK, Phase.PAUSED):
        check_transition(source, target)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 400), st.integers(0, 60)), min_size=1, max_size=30))
def test_it_never_promotes_on_too_little_data(windows: list[tuple[float, int, int]]) -> None:
    state = start(spec(min_requests=100, steps=(50,)), 0.0)
    state.tick(0.0, None, GATES)
    now = 0.0
    for advance, requests, _ in windows:
        now += advance * 10
        state.tick(now, evidence(totals(requests), totals(requests)), GATES)
        if state.phase is Phase.SUCCEEDED:
            assert requests >= 100
            break


def test_the_error_test_is_one_sided_with_a_tolerance() -> None:
    assert one_sided_p_value(0, 100, 5, 100, 0.005) == 1.0  # better than the baseline
    assert one_sided_p_value(1, 300, 0, 300, 0.005) == 1.0  # within the tolerance
    assert one_sided_p_value(30, 100, 0, 900, 0.005) < 1e-6
    p = one_sided_p_value(12, 200, 6, 200, 0.0)
    assert 0.05 < p < 0.15  # 6% against 3% on 200 each: suggestive, not significant
    gate = ErrorsGate(ErrorsSettings())
    assert gate.evaluate(evidence(totals(97, 3), totals(99, 1))).verdict is Verdict.PASS
    assert gate.evaluate(evidence(VariantTotals(), totals(10))).verdict is Verdict.INCONCLUSIVE


def test_caller_errors_and_shedding_do_not_count_against_a_variant() -> None:
    mixed = VariantTotals({"OK": 90, "INVALID_ARGUMENT": 5, "RESOURCE_EXHAUSTED": 5, "INTERNAL": 2})
    assert mixed.requests == 92 and mixed.failures == 2


def test_latency_quantiles_interpolate_within_buckets_and_windows_subtract() -> None:
    early, late = totals(100, seconds=0.002), totals(200, seconds=0.002)
    window = late.minus(early)
    assert window.count == 100 and window.codes == {"OK": 100}
    p99 = window.quantile(0.99)
    assert p99 is not None and 0.001 < p99 <= 0.0025
    assert late.minus(totals(300)) == late  # the totals went down: a restart, the whole is the window
    assert totals(10, seconds=100.0).quantile(0.5) == LATENCY_BUCKETS[-1]
    gate = LatencyGate(LatencySettings())
    slow = gate.evaluate(evidence(totals(100, seconds=0.03), totals(100, seconds=0.002)))
    assert slow.verdict is Verdict.FAIL and math.isclose(slow.values["limit_ms"], 1.2 * 2.4925 + 10, rel_tol=0.01)


def _latencies(count: int, seconds: float) -> Latencies:
    bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
    return Latencies(tuple(count if i == bucket else 0 for i in range(len(LATENCY_BUCKETS))), count)


def streamed(requests: int, first_s: float, gap_s: float) -> VariantTotals:
    """`requests` streamed requests, each with its first answer after `first_s` and 9 more `gap_s` apart."""
    return VariantTotals({"OK": requests}, first_response=_latencies(requests, first_s),
                         gaps=_latencies(9 * requests, gap_s))  # fmt: skip


def test_generative_variants_are_judged_on_their_first_answers_and_gaps_and_unary_latency_passes() -> None:
    gates = {gate.name: gate for gate in gates_for(GateSettings(), 0)}
    slow_start = evidence(streamed(300, 0.2, 0.01), streamed(300, 0.05, 0.01))
    assert gates["first_response"].evaluate(slow_start).verdict is Verdict.FAIL
    assert gates["response_gap"].evaluate(slow_start).verdict is Verdict.PASS
    assert gates["latency"].evaluate(slow_start).verdict is Verdict.PASS  # no unary calls: nothing to judge
    stutter = evidence(streamed(300, 0.05, 0.2), streamed(300, 0.05, 0.01))
    assert gates["response_gap"].evaluate(stutter).verdict is Verdict.FAIL
    one_sided = evidence(streamed(300, 0.05, 0.01), totals(300))  # only one variant streamed: too thin to judge
    assert gates["first_response"].evaluate(one_sided).verdict is Verdict.INCONCLUSIVE
    unary = evidence(totals(300), totals(300))
    assert gates["first_response"].evaluate(unary).verdict is Verdict.PASS
    window = streamed(500, 0.2, 0.01).minus(streamed(300, 0.2, 0.01))
    assert (window.first_response.count, window.gaps.count, window.requests) == (200, 1800, 200)
    assert VariantTotals.from_dict(window.to_dict()) == window


def test_streamed_requests_count_in_the_totals_by_how_they_ended() -> None:
    empty = {"buckets": [], "count": 0, "sum": 0.0}
    first = {"buckets": [0] * 8 + [3] + [0] * 7, "count": 3, "sum": 0.06}
    row = {"model": "m", "variant": "v", "first_response": first, "gaps": empty, "answers": [], "answers_sum": 9,
           "ended": {"done": 2, "failed": 1, "cancelled": 4, "broken": 0}}  # fmt: skip
    totals_ = totals_from_core({"series": {"requests": [], "variants": [], "streams": [row]}})[("m", "v")]
    assert totals_.codes == {"OK": 2, "UNKNOWN": 1, "CANCELLED": 4}
    assert (totals_.requests, totals_.failures, totals_.first_response.count, totals_.count) == (3, 1, 3, 0)


def test_regressions_are_judged_on_errors_above_the_tolerance() -> None:
    gate = ShadowGate(ShadowSettings(max_abs_error=1e-4), min_pairs=10)
    buckets = [0] * len(ABS_ERROR_BUCKETS)
    buckets[ABS_ERROR_BUCKETS.index(1e-6)] = 10
    close = ShadowCounters(compared=10, abs_error_buckets=list(buckets))
    assert gate.evaluate(evidence(VariantTotals(), VariantTotals(), close)).verdict is Verdict.PASS
    buckets[ABS_ERROR_BUCKETS.index(1.0)] = 1
    result = gate.evaluate(evidence(VariantTotals(), VariantTotals(),
                                    ShadowCounters(compared=11, abs_error_buckets=buckets)))  # fmt: skip
    assert result.verdict is Verdict.FAIL and result.values["over_tolerance"] == 1


def test_specs_are_checked() -> None:
    for bad in ({"steps": (50, 10)}, {"steps": ()}, {"steps": (0,)}, {"candidate": "1"}):
        with pytest.raises(ValueError):
            spec(**bad)
