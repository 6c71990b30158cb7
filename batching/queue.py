"""When to send a merged call, and whom it carries (pure: items are opaque, the clock injected).

The policy measured best for the gateway: no timer. A caller arriving while nothing is under way
upstream goes at once, alone; callers arriving while a call is in flight wait for it and then leave
together, as many rows as `max_rows` allows (first come, first served). Callers whose deadline has
passed, or who left, are dropped when a batch is taken rather than sent to Triton.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["BatchQueue", "Pending"]

T = TypeVar("T")


@dataclass(slots=True)
class Pending(Generic[T]):
    item: T
    rows: int
    deadline: float | None  # on the queue's clock; None: no deadline


class BatchQueue(Generic[T]):
    def __init__(self, max_rows: int, max_inflight: int = 1) -> None:
        if max_rows < 1 or max_inflight < 1:
            raise ValueError(f"max_rows and max_inflight must be >= 1, got {max_rows}, {max_inflight}")
        self.max_rows = max_rows
        self.max_inflight = max_inflight
        self.inflight = 0
        self._waiting: deque[Pending[T]] = deque()

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, item: T, rows: int, deadline: float | None) -> None:
        self._waiting.append(Pending(item, rows, deadline))

    def ready(self) -> bool:
        return bool(self._waiting) and self.inflight < self.max_inflight

    def take(self, now: float, alive: Callable[[T], bool]) -> tuple[list[Pending[T]], list[Pending[T]]]:
        """The next batch (counted in flight when not empty) and the callers dropped on the way
        because their deadline passed. Callers that are no longer `alive` vanish silently."""
        batch: list[Pending[T]] = []
        expired: list[Pending[T]] = []
        taken_rows = 0
        while self._waiting:
            head = self._waiting[0]
            if not alive(head.item):
                self._waiting.popleft()
                continue
            if head.deadline is not None and head.deadline <= now:
                expired.append(self._waiting.popleft())
                continue
            if batch and taken_rows + head.rows > self.max_rows:
                break
            batch.append(self._waiting.popleft())
            taken_rows += head.rows
        if batch:
            self.inflight += 1
        return batch, expired

    def done(self) -> None:
        """A merged call has finished (however it ended)."""
        self.inflight -= 1
