"""Admission control, sans-IO: a concurrency limit, then a bounded queue of priority classes with
round-robin fair share across tenants inside each class (deficit round robin with unit cost).

Fed tickets and clock readings, it answers with decisions; the async wrapper (`admission.py`)
turns them into waits and statuses. Strict priority between classes (1 is the highest); inside
a class, tenants take turns, so one tenant's burst cannot starve the others.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AdmissionPolicy", "Decision", "Ticket"]


class Decision(enum.Enum):
    ADMIT = "admit"
    QUEUED = "queued"
    REJECT_FULL = "reject-full"  # RESOURCE_EXHAUSTED, with a retry-after hint
    REJECT_DEADLINE = "reject-deadline"  # DEADLINE_EXCEEDED: it could not be served in time


@dataclass(eq=False)
class Ticket:
    priority: int
    tenant: str
    deadline: float | None  # on the policy's clock; None: no deadline
    enqueued_at: float = 0.0
    state: Decision = field(default=Decision.QUEUED)


class AdmissionPolicy:
    def __init__(self, limit: int, max_queue: int, priority_levels: int, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.max_queue = max_queue
        self.in_flight = 0
        self.queued = 0
        self.service_time_s = 0.0  # EWMA of upstream service time, for deadline estimates
        self._clock = clock
        self._classes: list[OrderedDict[str, deque[Ticket]]] = [OrderedDict() for _ in range(priority_levels)]

    def observe_service_time(self, seconds: float, weight: float = 0.2) -> None:
        self.service_time_s = (
            seconds if self.service_time_s == 0 else (1 - weight) * self.service_time_s + weight * seconds
        )

    def estimated_wait_s(self, ahead: int) -> float:
        """Time until a request with `ahead` requests queued before it would finish."""
        if self.service_time_s == 0:
            return 0.0
        return (math.floor(ahead / max(self.limit, 1)) + 1) * self.service_time_s

    def retry_after_s(self) -> float:
        return max(self.estimated_wait_s(self.queued), 0.001)

    def latest_start(self, ticket: Ticket) -> float:
        """When a queued ticket must have started to finish by its deadline (a little margin
        included, so the caller hears this answer before its own timer fires)."""
        assert ticket.deadline is not None
        return ticket.deadline - self.service_time_s - 0.005

    def _ahead_of(self, priority: int) -> int:
        return sum(len(q) for level in self._classes[:priority] for q in level.values())

    def offer(self, ticket: Ticket) -> Decision:
        now = self._clock()
        ticket.enqueued_at = now
        if ticket.deadline is not None and ticket.deadline <= now:
            ticket.state = Decision.REJECT_DEADLINE
        elif self.in_flight < self.limit and self.queued == 0:
            self.in_flight += 1
            ticket.state = Decision.ADMIT
        elif self.queued >= self.max_queue:
            ticket.state = Decision.REJECT_FULL
        elif (
            ticket.deadline is not None
            and now + self.estimated_wait_s(self._ahead_of(ticket.priority)) > ticket.deadline
        ):
            ticket.state = Decision.REJECT_DEADLINE
        else:
            self._classes[ticket.priority - 1].setdefault(ticket.tenant, deque()).append(ticket)
            self.queued += 1
            ticket.state = Decision.QUEUED
        return ticket.state

    def remove(self, ticket: Ticket) -> bool:
        """Take a queued ticket out (its caller left or its deadline passed)."""
        if ticket.state is not Decision.QUEUED:
            return False
        level = self._classes[ticket.priority - 1]
        tenant_queue = level.get(ticket.tenant)
        if tenant_queue is None or ticket not in tenant_queue:
            return False
        tenant_queue.remove(ticket)
        if not tenant_queue:
            del level[ticket.tenant]
        self.queued -= 1
        ticket.state = Decision.REJECT_DEADLINE
        return True

    def release(self) -> tuple[Ticket | None, list[Ticket]]:
        """A slot came free: the ticket admitted into it (if any), and expired tickets dropped."""
        self.in_flight -= 1
        return self._admit_next()

    def _admit_next(self) -> tuple[Ticket | None, list[Ticket]]:
        expired: list[Ticket] = []
        now = self._clock()
        while self.in_flight < self.limit and self.queued:
            ticket = self._pop()
            if ticket.deadline is not None and self.latest_start(ticket) <= now:
                ticket.state = Decision.REJECT_DEADLINE
                expired.append(ticket)
                continue
            self.in_flight += 1
            ticket.state = Decision.ADMIT
            return ticket, expired
        return None, expired

    def set_limit(self, limit: int) -> list[Ticket]:
        """A new limit (adaptive concurrency); tickets admitted because of it."""
        self.limit = limit
        admitted = []
        while (ticket := self._admit_next()[0]) is not None:
            admitted.append(ticket)
        return admitted

    def _pop(self) -> Ticket:
        for level in self._classes:
            if level:
                tenant, tenant_queue = next(iter(level.items()))
                ticket = tenant_queue.popleft()
                del level[tenant]
                if tenant_queue:  # back of the line: the next tenant goes first
                    level[tenant] = tenant_queue
                self.queued -= 1
                return ticket
        raise LookupError("queue is empty")
