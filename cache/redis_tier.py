"""Tier 2: Redis (redis.asyncio), shared by every replica; fails open.

Every call has a hard timeout and goes through a breaker: while Redis is down the gateway stops
asking it (counting the skips) and probes again with exponential back-off. Errors are counted,
never raised to the request path. Keys: `{namespace}{model}|{variant}|{digest hex}`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cache.breaker import Breaker
from cache.stats import CacheStats

__all__ = ["L2Key", "RedisTier", "RedisUnavailable"]

L2Key = tuple[str, str, bytes]  # public model, variant, digest
T = TypeVar("T")
_RAW, _ZLIB = b"r", b"z"
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


class RedisUnavailable(Exception):
    """Raised only to operators (invalidate/flush), never on the request path."""


class RedisTier:
    def __init__(
        self, url: str, timeout_s: float, namespace: str, compress: bool, stats: CacheStats, breaker: Breaker
    ) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )
        self._timeout_s = timeout_s
        self._namespace = namespace
        self._compress = compress
        self._stats = stats
        self._breaker = breaker

    def redis_key(self, key: L2Key) -> str:
        model, variant, digest = key
        return f"{self._namespace}{model}|{variant}|{digest.hex()}"

    async def _guarded(self, operation: Awaitable[T]) -> T | None:
        if not self._breaker.allow():
            self._stats.l2_skipped += 1
            if asyncio.iscoroutine(operation):
                operation.close()
            return None
        try:
            result = await asyncio.wait_for(operation, self._timeout_s)
        except (RedisError, OSError, TimeoutError):
            self._stats.l2_errors += 1
            self._breaker.failure()
            return None
        self._breaker.success()
        return result

    async def get(self, key: L2Key) -> bytes | None:
        stored = await self._guarded(self._client.get(self.redis_key(key)))
        if not isinstance(stored, bytes) or not stored:  # decode_responses is off: bytes or None
            return None
        return zlib.decompress(stored[1:]) if stored[:1] == _ZLIB else bytes(stored[1:])

    async def put(self, key: L2Key, value: bytes, ttl_s: float) -> None:
        payload = _ZLIB + zlib.compress(value, 1) if self._compress else _RAW + value
        await self._guarded(self._client.set(self.redis_key(key), payload, px=max(int(ttl_s * 1000), 1)))

    async def invalidate(self, model: str = "", variant: str = "") -> int:
        """Delete the keys of a model (and variant), or all of this namespace; the count deleted."""
        pattern = self._namespace.translate(_GLOB_SPECIAL)
        if model:
            pattern += model.translate(_GLOB_SPECIAL) + "|"
            pattern += (variant.translate(_GLOB_SPECIAL) + "|") if variant else ""
        try:
            deleted = 0
            batch: list[bytes] = []
            async for name in self._client.scan_iter(match=pattern + "*", count=500):
                batch.append(name)
                if len(batch) >= 500:
                    deleted += await self._client.delete(*batch)
                    batch.clear()
            if batch:
                deleted += await self._client.delete(*batch)
        except (RedisError, OSError) as exc:
            raise RedisUnavailable(f"redis: {exc}") from exc
        return deleted

    async def close(self) -> None:
        await self._client.aclose()
