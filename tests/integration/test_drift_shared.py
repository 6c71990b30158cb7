"""Drift windows shared by replicas, on a real Redis: two `RedisWindows` (as two gateways would
hold) feed one reference, one window and one verdict per model and variant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import redis.asyncio as redis

from gateway.config.schema import DriftConfig
from gateway.drift.monitor import Alert
from gateway.drift.shared import RedisCooldown, RedisWindows
from gateway.local.redis_server import running_redis

Sample = tuple[str, str, dict[str, np.ndarray]]


def _samples(rng: np.random.Generator, count: int, variant: str, shift: float = 0.0) -> list[Sample]:
    return [("m", variant, {"x": rng.normal(size=1) + shift, "y": rng.normal(size=1) + shift}) for _ in range(count)]


async def _alternately(replicas: list[RedisWindows], samples: list[Sample], chunk: int) -> tuple[list[Alert], int]:
    """Chunks of `samples` handed to the replicas in turn, as requests spread over a fleet."""
    alerts: list[Alert] = []
    frozen = 0
    for start in range(0, len(samples), chunk):
        closed, froze = await replicas[(start // chunk) % len(replicas)].observe(samples[start : start + chunk])
        alerts += closed
        frozen += len(froze)
    return alerts, frozen


async def _scenario(url: str) -> None:
    settings = DriftConfig(enabled=True, reference_samples=200, window_samples=100, consecutive=2)
    clients = [redis.Redis.from_url(url) for _ in range(2)]
    a, b = (RedisWindows(c, "t:", settings, main_variant=lambda model: "1", clock=lambda: 0.0) for c in clients)
    rng = np.random.default_rng(7)
    try:
        _, frozen = await _alternately([a, b], _samples(rng, 30, "2"), 10)  # not the main variant
        assert frozen == 0 and not a.references and not b.references
        _, frozen = await _alternately([a, b], _samples(rng, 203, "1"), 7)  # one reference of exactly 200
        await a.refresh()
        await b.refresh()
        assert frozen == 1 and a.references["m"].samples == b.references["m"].samples == 200
        assert "variant 1" in b.references["m"].source

        alerts, _ = await _alternately([a, b], _samples(rng, 102, "2"), 7)  # from both: one calm window of 100
        await b.refresh()
        view = b.views()[("m", "2")]
        assert not alerts and view.windows == 1 and view.last is not None and view.last.samples == 100
        assert not view.last.drifted and view.consecutive == 0 and view.collecting == 2
        assert b.views()[("m", "1")].collecting == 3  # what the reference did not take

        alerts, _ = await _alternately([a, b], _samples(rng, 198, "2", shift=2.0), 9)  # two drifted windows
        assert len(alerts) == 1 and alerts[0].result.consecutive == 2 and alerts[0].result.number == 3
        for replica in (a, b):
            await replica.refresh()
            view = replica.views()[("m", "2")]
            assert (view.windows, view.consecutive, view.collecting) == (3, 2, 0) and view.last and view.last.drifted

        await _alternately([a, b], _samples(rng, 30, "2", shift=2.0), 10)  # an open window ...
        await b.set_reference("m", {"x": rng.normal(size=300), "y": rng.normal(size=300)}, "uploaded")
        await a.refresh()  # ... is dropped with the old reference, and the run of drifted windows restarts
        assert (a.references["m"].source, a.references["m"].samples) == ("uploaded", 300)
        assert (a.views()[("m", "2")].consecutive, a.views()[("m", "2")].collecting) == (0, 0)

        first, second = (RedisCooldown(c, "t:") for c in clients)
        assert await first.claim("m", "2", 60.0) and not await second.claim("m", "2", 60.0)
        await second.count("skipped")
        await first.refresh()
        assert (first.fired, first.skipped) == (0, 1)
    finally:
        for client in clients:
            await client.aclose()


def test_replicas_feed_one_window_and_one_verdict(tmp_path: Path) -> None:
    with running_redis(tmp_path) as server:
        asyncio.run(_scenario(server.url))
