"""Admission policy (sans-IO) with an injected clock: limits, priorities, fair share, deadlines."""

from __future__ import annotations

from gateway.admission_policy import AdmissionPolicy, Decision, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _policy(limit: int = 1, max_queue: int = 10, levels: int = 3) -> tuple[AdmissionPolicy, Clock]:
    clock = Clock()
    return AdmissionPolicy(limit, max_queue, levels, clock), clock


def _drain(policy: AdmissionPolicy) -> list[Ticket]:
    """Release slots one by one; the order tickets were admitted in."""
    order: list[Ticket] = []
    while True:
        ticket, _ = policy.release()
        if ticket is None:
            return order
        order.append(ticket)


def test_admits_up_to_the_limit_then_queues_then_sheds() -> None:
    policy, _ = _policy(limit=2, max_queue=1)
    decisions = [policy.offer(Ticket(2, "t", None)) for _ in range(4)]
    assert decisions == [Decision.ADMIT, Decision.ADMIT, Decision.QUEUED, Decision.REJECT_FULL]
    assert (policy.in_flight, policy.queued) == (2, 1)


def test_a_released_slot_goes_to_the_queue_first() -> None:
    policy, _ = _policy(limit=1)
    policy.offer(Ticket(2, "t", None))
    waiting = Ticket(2, "t", None)
    policy.offer(waiting)
    assert policy.offer(Ticket(2, "t", None)) is Decision.QUEUED  # no jumping the queue
    admitted, _ = policy.release()
    assert admitted is waiting and waiting.state is Decision.ADMIT and policy.in_flight == 1


def test_higher_priority_class_goes_first() -> None:
    policy, _ = _policy(limit=1)
    policy.offer(Ticket(2, "t", None))
    low, high, mid = Ticket(3, "t", None), Ticket(1, "t", None), Ticket(2, "t", None)
    for ticket in (low, high, mid):
        policy.offer(ticket)
    assert _drain(policy) == [high, mid, low]


def test_tenants_take_turns_within_a_class() -> None:
    policy, _ = _policy(limit=1, max_queue=100)
    policy.offer(Ticket(2, "flood", None))
    flood = [Ticket(2, "flood", None) for _ in range(6)]
    for ticket in flood:
        policy.offer(ticket)
    quiet = [Ticket(2, "quiet", None) for _ in range(2)]
    for ticket in quiet:
        policy.offer(ticket)
    order = [t.tenant for t in _drain(policy)]
    assert order[:4] == ["flood", "quiet", "flood", "quiet"]
    assert order.count("flood") == 6


def test_expired_deadline_is_rejected_at_once() -> None:
    policy, clock = _policy()
    assert policy.offer(Ticket(2, "t", clock.now - 0.001)) is Decision.REJECT_DEADLINE


def test_request_that_cannot_be_served_in_time_is_rejected_before_queueing() -> None:
    policy, clock = _policy(limit=1)
    policy.observe_service_time(0.100)
    policy.offer(Ticket(2, "t", None))
    assert policy.offer(Ticket(2, "t", clock.now + 0.050)) is Decision.REJECT_DEADLINE  # needs ~100 ms
    assert policy.offer(Ticket(2, "t", clock.now + 0.150)) is Decision.QUEUED


def test_queued_tickets_whose_deadline_passed_are_skipped() -> None:
    policy, clock = _policy(limit=1)
    policy.offer(Ticket(2, "t", None))
    stale, fresh = Ticket(2, "t", clock.now + 1), Ticket(2, "t", clock.now + 10)
    policy.offer(stale)
    policy.offer(fresh)
    clock.now += 2
    admitted, expired = policy.release()
    assert admitted is fresh and expired == [stale] and stale.state is Decision.REJECT_DEADLINE


def test_removed_ticket_leaves_the_queue() -> None:
    policy, _ = _policy(limit=1)
    policy.offer(Ticket(2, "t", None))
    leaving = Ticket(2, "t", None)
    policy.offer(leaving)
    assert policy.remove(leaving) and policy.queued == 0 and not policy.remove(leaving)
    assert policy.release() == (None, []) and policy.in_flight == 0


def test_retry_after_grows_with_the_queue() -> None:
    policy, _ = _policy(limit=2, max_queue=10)
    policy.observe_service_time(0.2)
    for _ in range(2):
        policy.offer(Ticket(2, "t", None))
    empty = policy.retry_after_s()
    for _ in range(6):
        policy.offer(Ticket(2, "t", None))
    assert policy.retry_after_s() > empty > 0


def test_raising_the_limit_admits_waiting_tickets() -> None:
    policy, _ = _policy(limit=1)
    policy.offer(Ticket(2, "t", None))
    waiting = [Ticket(2, "t", None) for _ in range(3)]
    for ticket in waiting:
        policy.offer(ticket)
    assert policy.set_limit(3) == waiting[:2] and policy.in_flight == 3
