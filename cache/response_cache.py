"""The two tiers together: look up L1, then L2 (promoting L2 hits); store to both.

Stores to Redis run in the background so a miss is never slowed by Redis.
"""

from __future__ import annotations

import asyncio
import contextlib

from cache.lru import ByteLRU
from cache.policy import CachePolicy, Outcome
from cache.redis_tier import L2Key, RedisTier
from cache.stats import CacheStats

__all__ = ["ResponseCache"]


class ResponseCache:
    def __init__(self, l1: ByteLRU | None, l2: RedisTier | None, stats: CacheStats) -> None:
        self.l1 = l1
        self.l2 = l2
        self.stats = stats
        self._stores: set[asyncio.Task[None]] = set()

    def lookup_l1(self, key: L2Key, policy: CachePolicy) -> bytes | None:
        if policy.l1 and self.l1 is not None and (value := self.l1.get(key)) is not None:
            self.stats.hits_l1 += 1
            return value
        return None

    async def lookup_l2(self, key: L2Key, policy: CachePolicy) -> tuple[bytes, str] | None:
        """A Redis hit (copied into L1 when the route uses it), or None."""
        if policy.l2 and self.l2 is not None and (value := await self.l2.get(key)) is not None:
            self.stats.hits_l2 += 1
            if policy.l1 and self.l1 is not None:
                self.l1.put(key, value, policy.ttl_s)
            return value, Outcome.HIT_L2
        return None

    def store(self, key: L2Key, value: bytes, policy: CachePolicy) -> None:
        if len(value) > policy.max_entry_bytes:
            self.stats.too_large += 1
            return
        self.stats.stores += 1
        if policy.l1 and self.l1 is not None:
            self.l1.put(key, value, policy.ttl_s)
        if policy.l2 and self.l2 is not None:
            task = asyncio.create_task(self.l2.put(key, value, policy.ttl_s))
            self._stores.add(task)
            task.add_done_callback(self._stores.discard)

    async def invalidate(self, model: str = "", variant: str = "") -> int:
        """Drop a model's entries (one variant's, or everything when no model is named)."""

        def doomed(key: object) -> bool:
            assert isinstance(key, tuple)
            return not model or (key[0] == model and (not variant or key[1] == variant))

        count = self.l1.discard_where(doomed) if self.l1 is not None else 0
        if self.l2 is not None:
            count += await self.l2.invalidate(model, variant)
        self.stats.invalidated += count
        return count

    async def close(self) -> None:
        if self._stores:
            await asyncio.wait(set(self._stores), timeout=1.0)
        for task in self._stores:
            task.cancel()
        if self.l2 is not None:
            with contextlib.suppress(Exception):
                await self.l2.close()
