"""Per-endpoint health, sans-IO: active probe results plus passive outlier ejection.

An endpoint is eligible while its last probe said ready and it is not ejected. `threshold`
consecutive failures eject it for `base_s * 2^(ejections-1)` (capped at `max_s`); afterwards it
is eligible again, and one more failure streak ejects it for twice as long. A success resets the
streak; a full back-off period without ejection forgets past ejections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EndpointHealth", "OutlierSettings"]


@dataclass(frozen=True)
class OutlierSettings:
    consecutive_failures: int = 5
    base_ejection_s: float = 1.0
    max_ejection_s: float = 30.0
    max_ejection_percent: int = 50


class EndpointHealth:
    def __init__(self, settings: OutlierSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self.ready = False  # from the active probe
        self.failures = 0  # consecutive
        self.ejections = 0
        self.ejected_until = 0.0
        self.total_ejections = 0

    def ejected(self) -> bool:
        return self._clock() < self.ejected_until

    def eligible(self) -> bool:
        return self.ready and not self.ejected()

    def success(self) -> None:
        self.failures = 0
        if self.ejections and self._clock() > self.ejected_until + self._settings.max_ejection_s:
            self.ejections = 0

    def failure(self, may_eject: bool) -> bool:
        """Count a failure; True when it ejects the endpoint (`may_eject`: the pool's percentage cap)."""
        self.failures += 1
        if self.failures < self._settings.consecutive_failures or self.ejected() or not may_eject:
            return False
        self.ejections += 1
        self.total_ejections += 1
        backoff = self._settings.base_ejection_s * 2 ** (self.ejections - 1)
        self.ejected_until = self._clock() + min(backoff, self._settings.max_ejection_s)
        self.failures = 0
        return True
