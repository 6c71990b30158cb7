"""Cache policy per route and the per-request `cache-control` directives (pure)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CACHE_CONTROL", "CachePolicy", "Directives", "Outcome"]

CACHE_CONTROL = "cache-control"  # request metadata key


class Outcome:
    """Values of the `x-cache` response metadata."""

    HIT_L1 = "hit-l1"
    HIT_L2 = "hit-l2"
    MISS = "miss"
    BYPASS = "bypass"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool = False
    ttl_s: float = 300.0
    max_entry_bytes: int = 1 << 20
    l1: bool = True
    l2: bool = True


@dataclass(frozen=True, slots=True)
class Directives:
    """`no-cache`: skip the lookup, still store. `no-store`: look up, never store."""

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Directives:
        if not header:
            return _NONE
        tokens = {token.strip().lower() for token in header.split(",")}
        return cls(no_cache="no-cache" in tokens, no_store="no-store" in tokens)


_NONE = Directives()
