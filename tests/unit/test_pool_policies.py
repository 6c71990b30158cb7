"""Balancer, outlier ejection, retry budget and adaptive limit (sans-IO, injected clock/draws)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from gateway.adaptive import GradientLimit
from gateway.balancer import EndpointLoad, choose
from gateway.outlier import EndpointHealth, OutlierSettings
from gateway.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _draws(*values: int) -> Callable[[int], int]:
    sequence = itertools.cycle(values)
    return lambda _n: next(sequence)


def test_p2c_prefers_fewer_outstanding_then_lower_latency() -> None:
    loads = [EndpointLoad(5, 0.001), EndpointLoad(1, 0.009), EndpointLoad(1, 0.002)]
    assert choose(loads, _draws(0, 0)) == 1  # draws 0 and 1: 1 has fewer outstanding
    assert choose(loads, _draws(1, 1)) == 2  # draws 1 and 2: tie on outstanding, 2 is faster
    assert choose([EndpointLoad()], _draws(0)) == 0


def test_p2c_draws_two_distinct_endpoints() -> None:
    loads = [EndpointLoad(0), EndpointLoad(9)]
    assert {choose(loads, _draws(first, 0)) for first in (0, 1)} == {0}


def test_latency_ewma() -> None:
    load = EndpointLoad()
    load.observe(1.0)
    load.observe(2.0, weight=0.5)
    assert load.latency_ewma_s == 1.5


def test_consecutive_failures_eject_with_exponential_back_off() -> None:
    clock = Clock()
    health = EndpointHealth(OutlierSettings(consecutive_failures=3, base_ejection_s=1.0, max_ejection_s=3.0), clock)
    health.ready = True
    assert [health.failure(True) for _ in range(3)] == [False, False, True]
    assert health.ejected() and not health.eligible()
    clock.now = 1.0
    assert health.eligible()
    assert [health.failure(True) for _ in range(3)] == [False, False, True]  # second ejection: 2 s
    clock.now = 2.9
    assert health.ejected()
    clock.now = 3.0
    assert not health.ejected()
    for _ in range(3):
        health.failure(True)
    assert health.ejected_until == 6.0  # 4 s capped at 3 s


def test_success_resets_the_streak_and_the_cap_blocks_ejection() -> None:
    health = EndpointHealth(OutlierSettings(consecutive_failures=2), Clock())
    health.failure(True)
    health.success()
    assert not health.failure(True)
    assert not health.failure(False) and not health.ejected()  # the pool's cap said no


def test_an_unready_endpoint_is_not_eligible() -> None:
    health = EndpointHealth(OutlierSettings(), Clock())
    assert not health.eligible()
    health.ready = True
    assert health.eligible()


def test_retry_budget_allows_ratio_of_requests_plus_initial() -> None:
    budget = RetryBudget(ratio=0.2, initial=3)
    granted = 0
    for _ in range(100):
        budget.on_request()
        granted += budget.try_retry()
    assert granted <= 0.2 * 100 + 3 and granted >= 20


def test_retry_budget_tokens_are_capped() -> None:
    budget = RetryBudget(ratio=1.0, initial=0, max_tokens=2)
    for _ in range(50):
        budget.on_request()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]


def test_gradient_limit_shrinks_when_latency_rises_and_grows_when_it_is_flat() -> None:
    limit = GradientLimit(min_limit=2, max_limit=100, window=5)
    limit.limit = 20
    for _ in range(5):
        limit.sample(0.010)
    flat = limit.limit
    assert flat > 20  # gradient 1: + sqrt(limit) headroom
    for _ in range(5):
        limit.sample(0.040)  # 4x the minimum: gradient clamps at 0.5
    assert limit.limit < flat
    for _ in range(200):
        limit.sample(0.010)
    assert limit.limit == 100  # bounded
