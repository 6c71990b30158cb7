"""Endpoint choice, sans-IO: power of two choices on outstanding requests, latency EWMA as tie-break.

Two distinct eligible endpoints are drawn at random; the one with fewer requests under way wins,
and on a tie the one with the lower latency EWMA. With a single candidate it is that one; with
none the caller decides (the pool falls back to every endpoint rather than fail blind).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["EndpointLoad", "choose"]


@dataclass
class EndpointLoad:
    outstanding: int = 0
    latency_ewma_s: float = 0.0

    def observe(self, seconds: float, weight: float = 0.3) -> None:
        if self.latency_ewma_s == 0:
            self.latency_ewma_s = seconds
        else:
            self.latency_ewma_s += weight * (seconds - self.latency_ewma_s)


def choose(loads: Sequence[EndpointLoad], draw: Callable[[int], int] = random.randrange) -> int:
    """Index of the chosen endpoint among `loads` (which must not be empty)."""
    if len(loads) == 1:
        return 0
    first = draw(len(loads))
    second = draw(len(loads) - 1)
    second += second >= first  # distinct from the first
    a, b = loads[first], loads[second]
    if (a.outstanding, a.latency_ewma_s) <= (b.outstanding, b.latency_ewma_s):
        return first
    return second
