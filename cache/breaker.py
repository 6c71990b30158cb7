"""A circuit breaker with exponential back-off (pure, clock injected).

Closed: calls go through. After `threshold` consecutive failures it opens: calls are skipped
until the back-off has passed, then one probe is let through (half-open). A success closes it;
a failure reopens it with a doubled back-off, up to `max_backoff_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Breaker"]


class Breaker:
    def __init__(
        self,
        threshold: int = 3,
        base_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._base_backoff_s = base_backoff_s
        self._max_backoff_s = max_backoff_s
        self._clock = clock
        self._failures = 0
        self._backoff_s = base_backoff_s
        self._open_until: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "half-open" if self._probing or self._clock() >= self._open_until else "open"

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True  # one probe at a time
        return True

    def success(self) -> None:
        self._failures = 0
        self._backoff_s = self._base_backoff_s
        self._open_until = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing:
            self._backoff_s = min(self._backoff_s * 2, self._max_backoff_s)
        if self._probing or self._failures >= self._threshold:
            self._open_until = self._clock() + self._backoff_s
            self._probing = False
