"""Counters of one pool: admission, retries, ejections. Injectable; read by admin and telemetry."""

from __future__ import annotations

from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

__all__ = ["PoolStats"]

_MAX_WAIT_US = 3_600_000_000  # an hour: longer waits are clamped


@dataclass
class PoolStats:
    attempts: int = 0  # upstream calls made, retries included
    retries: int = 0
    retries_denied: int = 0  # a retry was warranted but the budget was spent
    hedges: int = 0  # second attempts sent because the first was slow
    ejections: int = 0
    admitted: int = 0
    queued: int = 0  # admitted after waiting in the queue
    shed: int = 0  # RESOURCE_EXHAUSTED: the queue was full
    expired: int = 0  # DEADLINE_EXCEEDED before reaching Triton
    cancelled: int = 0  # the caller left while queued
    queue_wait_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, _MAX_WAIT_US, 2))

    def record_wait(self, seconds: float) -> None:
        self.queue_wait_us.record_value(min(max(int(seconds * 1e6), 1), _MAX_WAIT_US))
