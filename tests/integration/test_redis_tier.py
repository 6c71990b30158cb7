"""The Redis tier on its own against a real redis-server: compression, TTL, namespaced invalidation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as redis

from cache import Breaker, CacheStats, RedisTier
from tests.procs import running_redis


async def test_compressed_values_round_trip_and_are_stored_compressed(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        stats = CacheStats()
        tier = RedisTier(server.url, 0.5, "ns:", True, stats, Breaker())
        value = b"\x00" * 10_000
        await tier.put(("model", "v1", b"\x01" * 16), value, ttl_s=60)
        assert await tier.get(("model", "v1", b"\x01" * 16)) == value
        raw = redis.Redis.from_url(server.url)
        stored = await raw.get("ns:model|v1|" + "01" * 16)
        assert stored is not None and stored[:1] == b"z" and len(stored) < 200
        assert 0 < await raw.pttl("ns:model|v1|" + "01" * 16) <= 60_000
        await tier.put(("model", "v2", b"\x02" * 16), b"x", ttl_s=60)
        await tier.put(("other", "v1", b"\x03" * 16), b"y", ttl_s=60)
        assert await tier.invalidate("model", "v1") == 1
        assert await tier.invalidate("model") == 1
        assert await tier.get(("other", "v1", b"\x03" * 16)) == b"y"  # another model's entry stays
        await raw.aclose()
        await tier.close()
        assert stats.l2_errors == 0


async def test_a_dead_redis_costs_at_most_the_timeout_and_then_nothing(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        url = server.url
    stats = CacheStats()
    tier = RedisTier(url, 0.05, "ns:", False, stats, Breaker(threshold=2, base_backoff_s=10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(10):
        assert await tier.get(("m", "v", b"k")) is None
    assert loop.time() - started < 1.0
    assert (stats.l2_errors, stats.l2_skipped) == (2, 8)
    await tier.close()
