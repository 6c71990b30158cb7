"""Cache counters, one injectable object read by the admin API and the telemetry exporter."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CacheStats"]


@dataclass
class CacheStats:
    hits_l1: int = 0
    hits_l2: int = 0
    misses: int = 0
    bypassed: int = 0
    stores: int = 0
    too_large: int = 0  # responses over the route's max entry size, not stored
    coalesced: int = 0  # requests that shared another's upstream call
    l2_errors: int = 0  # Redis calls that failed or timed out (never surfaced to callers)
    l2_skipped: int = 0  # Redis calls not made while the breaker was open
    invalidated: int = 0
