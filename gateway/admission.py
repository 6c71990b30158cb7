"""Admission control on the request path: the async side of `admission_policy`.

A request takes a slot of its pool before going upstream. With the pool at its limit it waits
in the queue (by priority, tenants taking turns) until a slot is free, its deadline passes
(DEADLINE_EXCEEDED, never reaching Triton), or the caller leaves (removed from the queue). A full
queue sheds at once with RESOURCE_EXHAUSTED and a retry-after hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

from gateway.adaptive import GradientLimit
from gateway.admission_policy import AdmissionPolicy, Decision, Ticket
from gateway.config import GatewayConfig
from gateway.errors import DeadlineExceeded, Overloaded
from gateway.pool_stats import PoolStats
from gateway.telemetry import child_span, current
from gateway.upstream import Pool

__all__ = ["Admission", "admissions"]


class Admission:
    def __init__(
        self,
        pool: str,
        policy: AdmissionPolicy,
        stats: PoolStats,
        adaptive: GradientLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.stats = stats
        self._adaptive = adaptive
        self._clock = clock
        self._waiters: dict[Ticket, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, priority: int, tenant: str, timeout: float | None) -> AsyncIterator[None]:
        now = self._clock()
        ticket = Ticket(priority, tenant, None if timeout is None else now + timeout)
        decision = self.policy.offer(ticket)
        if decision is Decision.REJECT_FULL:
            self.stats.shed += 1
            retry_after_ms = max(1, round(self.policy.retry_after_s() * 1000))
            raise Overloaded(
                f"pool '{self.pool}' is at capacity ({self.policy.in_flight} in flight, {self.policy.queued} queued, "
                f"max_queue {self.policy.max_queue}): retry after ~{retry_after_ms} ms",
                retry_after_ms,
            )
        if decision is Decision.REJECT_DEADLINE:
            self.stats.expired += 1
            wait_ms = self.policy.estimated_wait_s(self.policy.queued) * 1000
            raise DeadlineExceeded(
                f"pool '{self.pool}' could not serve the request before its deadline "
                f"({(timeout or 0) * 1000:.0f} ms left, ~{wait_ms:.0f} ms expected in the queue)"
            )
        if decision is Decision.QUEUED:
            with child_span(
                "queue", {"gateway.pool": self.pool, "gateway.priority": priority, "gateway.tenant": tenant}
            ):
                await self._wait(ticket, now)
            if (record := current()) is not None:
                record.queue_wait_s = self._clock() - now
        self.stats.admitted += 1
        started = self._clock()
        try:
            yield
        finally:
            self.policy.observe_service_time(self._clock() - started)
            self._release()
            if self._adaptive is not None and (limit := self._adaptive.sample(self._clock() - started)) is not None:
                for admitted in self.policy.set_limit(limit):
                    self._grant(admitted)

    async def _wait(self, ticket: Ticket, since: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = waiter
        remaining = None
        if ticket.deadline is not None:  # leave once there is no longer time to be served
            remaining = max(self.policy.latest_start(ticket) - self._clock(), 0.0)
        try:
            await asyncio.wait_for(waiter, remaining)
        except TimeoutError:
            self.policy.remove(ticket)
            self.stats.expired += 1
            waited_ms = (self._clock() - since) * 1000
            raise DeadlineExceeded(
                f"pool '{self.pool}': after {waited_ms:.0f} ms in the queue, too little time was left before "
                f"the deadline to be served (~{self.policy.service_time_s * 1000:.0f} ms per request)"
            ) from None
        except asyncio.CancelledError:
            if not self.policy.remove(ticket) and ticket.state is Decision.ADMIT:
                self._release()  # admitted just as the caller left: pass the slot on
            self.stats.cancelled += 1
            raise
        finally:
            self._waiters.pop(ticket, None)
        self.stats.queued += 1
        self.stats.record_wait(self._clock() - since)

    def _grant(self, ticket: Ticket) -> None:
        waiter = self._waiters.get(ticket)
        if waiter is None or waiter.done():  # its caller already left
            self._release()
        else:
            waiter.set_result(None)

    def _release(self) -> None:
        ticket, expired = self.policy.release()
        for dropped in expired:
            waiter = self._waiters.get(dropped)
            if waiter is not None and not waiter.done():
                waiter.set_exception(TimeoutError())
        if ticket is not None:
            self._grant(ticket)


def admissions(config: GatewayConfig, pools: Mapping[str, Pool]) -> dict[str, Admission]:
    """An Admission for every pool with a concurrency limit (fixed or adaptive)."""
    built = {}
    for name, settings in config.pools.items():
        if not settings.max_inflight and settings.adaptive is None:
            continue
        adaptive = None
        limit = settings.max_inflight
        if settings.adaptive is not None:
            adaptive = GradientLimit(settings.adaptive.min_limit, settings.adaptive.max_limit, settings.adaptive.window)
            limit = limit or settings.adaptive.min_limit
            adaptive.limit = limit
        policy = AdmissionPolicy(limit, settings.max_queue, config.admission.priority_levels, time.monotonic)
        built[name] = Admission(name, policy, pools[name].stats, adaptive)
    return built
