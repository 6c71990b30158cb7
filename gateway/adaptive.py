"""Adaptive concurrency, sans-IO: the limit follows latency (gradient, as Envoy's filter).

Per window of samples: gradient = min RTT / window's mean RTT, clamped to [0.5, 1];
new limit = gradient * limit + sqrt(limit) (room to find out whether more would do), within
[min_limit, max_limit]. The min RTT is re-measured every `reset_windows` windows, so a slower
model version does not leave the limit pinned low forever.
"""

from __future__ import annotations

import math

__all__ = ["GradientLimit"]


class GradientLimit:
    def __init__(self, min_limit: int, max_limit: int, window: int, reset_windows: int = 20) -> None:
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.limit = min_limit
        self.min_rtt_s = math.inf
        self._window = window
        self._reset_windows = reset_windows
        self._samples: list[float] = []
        self._windows = 0

    def sample(self, rtt_s: float) -> int | None:
        """Record one request's upstream time; the new limit when a window completes."""
        self._samples.append(rtt_s)
        if len(self._samples) < self._window:
            return None
        mean = sum(self._samples) / len(self._samples)
        self.min_rtt_s = min(self.min_rtt_s, min(self._samples))
        self._samples.clear()
        self._windows += 1
        gradient = max(0.5, min(1.0, self.min_rtt_s / mean)) if mean > 0 else 1.0
        self.limit = max(self.min_limit, min(self.max_limit, int(gradient * self.limit + math.sqrt(self.limit))))
        if self._windows % self._reset_windows == 0:
            self.min_rtt_s = math.inf
        return self.limit
