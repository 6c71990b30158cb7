"""The byte-bounded LRU, the breaker, cache-control directives and single flight (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from cache import Breaker, ByteLRU, Directives, SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lru_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    lru = ByteLRU(max_bytes=10, clock=Clock())
    lru.put("a", b"1234", 60)
    lru.put("b", b"1234", 60)
    assert lru.get("a") == b"1234"  # a is now the most recent
    lru.put("c", b"1234", 60)  # 12 bytes > 10: b goes
    assert (lru.get("b"), lru.get("a"), lru.get("c")) == (None, b"1234", b"1234")
    assert (lru.bytes, len(lru), lru.evictions) == (8, 2, 1)


def test_lru_refuses_a_value_larger_than_the_bound() -> None:
    lru = ByteLRU(max_bytes=3, clock=Clock())
    assert not lru.put("a", b"1234", 60) and len(lru) == 0


def test_lru_entries_expire() -> None:
    clock = Clock()
    lru = ByteLRU(max_bytes=100, clock=clock)
    lru.put("a", b"x", ttl_s=5)
    clock.now = 4.9
    assert lru.get("a") == b"x"
    clock.now = 5.0
    assert lru.get("a") is None and lru.bytes == 0


def test_lru_replacing_a_key_keeps_the_byte_count_right() -> None:
    lru = ByteLRU(max_bytes=100, clock=Clock())
    lru.put("a", b"xxxx", 60)
    lru.put("a", b"yy", 60)
    assert lru.bytes == 2 and lru.discard_where(lambda key: key == "a") == 1 and lru.bytes == 0


def test_breaker_opens_backs_off_exponentially_and_closes_on_success() -> None:
    clock = Clock()
    breaker = Breaker(threshold=2, base_backoff_s=1.0, max_backoff_s=3.0, clock=clock)
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert not breaker.allow() and breaker.state == "open"
    clock.now = 1.0
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failure()  # probe failed: back-off doubles to 2 s
    clock.now = 2.9
    assert not breaker.allow()
    clock.now = 3.0
    assert breaker.allow()
    breaker.failure()  # 4 s capped at 3 s
    clock.now = 5.9
    assert not breaker.allow()
    clock.now = 6.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


@pytest.mark.parametrize(
    ("header", "no_cache", "no_store"),
    [(None, False, False), ("no-cache", True, False), ("No-Store", False, True), ("no-cache, no-store", True, True),
     ("max-age=0", False, False)],
)  # fmt: skip
def test_cache_control_directives(header: str | None, no_cache: bool, no_store: bool) -> None:
    assert Directives.parse(header) == Directives(no_cache, no_store)


async def test_single_flight_shares_one_call_and_its_error() -> None:
    flight: SingleFlight[bytes] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def call() -> bytes:
        nonlocal calls
        calls += 1
        await release.wait()
        return b"answer"

    waiters = [asyncio.create_task(flight.run("k", call)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1 and {r[0] for r in results} == {b"answer"} and sum(r[1] for r in results) == 1
    assert len(flight) == 0

    async def failing() -> bytes:
        await asyncio.sleep(0)
        raise RuntimeError("upstream says no")

    outcomes = await asyncio.gather(*(flight.run("e", failing) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_a_follower_leaving_does_not_cancel_the_shared_call() -> None:
    flight: SingleFlight[bytes] = SingleFlight()
    release = asyncio.Event()

    async def call() -> bytes:
        await release.wait()
        return b"late"

    leader = asyncio.create_task(flight.run("k", call))
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flight.run("k", call), timeout=0.01)
    release.set()
    assert await leader == (b"late", True)
