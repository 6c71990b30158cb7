"""Where predictions wait for their outcomes, and the per-variant counters: in memory (bounded
by count and TTL) for one gateway, or in Redis (TTL per record, counters in hashes) so that an
outcome reported to any replica joins a prediction any replica made. Reporting is idempotent
per request: a second outcome for one request counts as a duplicate and changes nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.errors import UpstreamUnavailable
from gateway.feedback.quality import Outcome, Prediction, QualityTotals, outcome_fields, prediction_fields

__all__ = ["FeedbackStore", "MemoryFeedback", "RedisFeedback", "Reported"]

log = logging.getLogger(__name__)
Key = tuple[str, str]  # model, variant


@dataclass(frozen=True, slots=True)
class Reported:
    accepted: int = 0
    unmatched: int = 0
    late: int = 0
    duplicate: int = 0
    waiting: tuple[Outcome, ...] = ()  # the unmatched ones: their prediction may not be here yet

    def __add__(self, other: Reported) -> Reported:
        return Reported(self.accepted + other.accepted, other.unmatched, self.late + other.late,
                        self.duplicate + other.duplicate, other.waiting)  # fmt: skip


class FeedbackStore(Protocol):
    unmatched: int

    async def add(self, predictions: Sequence[Prediction]) -> None: ...
    # `count_unmatched`: whether outcomes matching no prediction count as unmatched now (False:
    # the caller holds them for another try, and counts what is left with `count_unmatched`).
    async def report(self, outcomes: Sequence[Outcome], now: float, count_unmatched: bool = True) -> Reported: ...
    async def count_unmatched(self, count: int) -> None: ...
    async def refresh(self) -> None: ...
    def totals(self) -> dict[Key, QualityTotals]: ...  # as of the last refresh
    async def close(self) -> None: ...


def _add(counters: dict[str, float], fields: Mapping[str, float]) -> None:
    for name, number in fields.items():
        counters[name] = counters.get(name, 0) + number


class _Bounded(OrderedDict[str, tuple[float, object]]):
    """Insertion-ordered, at most `size` entries, none older than `ttl_s`."""

    def __init__(self, size: int, ttl_s: float) -> None:
        super().__init__()
        self.size, self.ttl_s = size, ttl_s

    def put(self, key: str, value: object, now: float) -> None:
        self.pop(key, None)
        self[key] = (now, value)
        while len(self) > self.size:
            self.popitem(last=False)
        while self and next(iter(self.values()))[0] < now - self.ttl_s:
            self.popitem(last=False)


class MemoryFeedback:
    def __init__(self, max_records: int, ttl_s: float, max_lag_s: float) -> None:
        self._predictions = _Bounded(max_records, ttl_s)
        self._reported = _Bounded(max_records, ttl_s)  # keys already joined: their model and variant
        self._counters: dict[Key, dict[str, float]] = {}
        self._max_lag_s = max_lag_s
        self.unmatched = 0

    async def add(self, predictions: Sequence[Prediction]) -> None:
        for prediction in predictions:
            self._predictions.put(prediction.key, prediction, prediction.time)
            _add(self._counters.setdefault((prediction.model, prediction.variant), {}), prediction_fields(prediction))

    async def report(self, outcomes: Sequence[Outcome], now: float, count_unmatched: bool = True) -> Reported:
        accepted = late = duplicate = 0
        waiting: list[Outcome] = []
        for outcome in outcomes:
            seen = self._reported.get(outcome.key)
            if seen is not None:
                duplicate += 1
                _add(self._counters.setdefault(seen[1], {}), {"duplicate": 1})  # type: ignore[arg-type]
                continue
            entry = self._predictions.pop(outcome.key, None)
            if entry is None:
                waiting.append(outcome)
                continue
            prediction = entry[1]
            assert isinstance(prediction, Prediction)
            fields = outcome_fields(prediction, outcome, now, self._max_lag_s)
            late += int("late" in fields)
            accepted += int("late" not in fields)
            key = (prediction.model, prediction.variant)
            _add(self._counters.setdefault(key, {}), fields)
            self._reported.put(outcome.key, key, now)
        if count_unmatched:
            await self.count_unmatched(len(waiting))
        return Reported(accepted, len(waiting), late, duplicate, tuple(waiting))

    async def count_unmatched(self, count: int) -> None:
        self.unmatched += count

    async def refresh(self) -> None:
        return None

    def totals(self) -> dict[Key, QualityTotals]:
        return {key: QualityTotals.from_fields(counters) for key, counters in self._counters.items()}

    async def close(self) -> None:
        return None


class RedisFeedback:
    """`{ns}pred:{key}` (JSON, EX ttl), `{ns}joined:{key}` (SET NX: one outcome per request),
    `{ns}quality:{model}\\x1f{variant}` (a hash of counters), `{ns}outcomes:unmatched`."""

    def __init__(self, url: str, namespace: str, ttl_s: float, max_lag_s: float) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._ns, self._ttl, self._max_lag_s = namespace, max(int(ttl_s), 1), max_lag_s
        self._totals: dict[Key, QualityTotals] = {}
        self.unmatched = 0

    def _quality(self, model: str, variant: str) -> str:
        return f"{self._ns}quality:{model}\x1f{variant}"

    def _increments(self, pipe: redis.client.Pipeline, key: str, fields: Mapping[str, float]) -> None:
        for name, number in fields.items():
            if isinstance(number, float) and not number.is_integer():
                pipe.hincrbyfloat(key, name, number)
            else:
                pipe.hincrby(key, name, int(number))

    async def add(self, predictions: Sequence[Prediction]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for p in predictions:
                    pipe.set(f"{self._ns}pred:{p.key}", json.dumps(p.to_dict()), ex=self._ttl)
                    self._increments(pipe, self._quality(p.model, p.variant), prediction_fields(p))
                await pipe.execute()
        except (RedisError, OSError) as exc:  # the predictions are lost, the requests were served
            log.warning("%d predictions not recorded: redis: %s", len(predictions), exc)

    async def report(self, outcomes: Sequence[Outcome], now: float, count_unmatched: bool = True) -> Reported:
        try:
            return await self._report(outcomes, now, count_unmatched)
        except (RedisError, OSError) as exc:
            raise UpstreamUnavailable(f"outcomes not recorded: redis: {exc}") from exc

    async def count_unmatched(self, count: int) -> None:
        if count:
            try:
                await self._client.incrby(f"{self._ns}outcomes:unmatched", count)
            except (RedisError, OSError) as exc:
                raise UpstreamUnavailable(f"outcomes not recorded: redis: {exc}") from exc

    async def _report(self, outcomes: Sequence[Outcome], now: float, count_unmatched: bool) -> Reported:
        found = await self._client.mget([f"{self._ns}pred:{o.key}" for o in outcomes]) if outcomes else []
        async with self._client.pipeline(transaction=False) as pipe:
            for outcome in outcomes:
                pipe.set(f"{self._ns}joined:{outcome.key}", 1, nx=True, ex=self._ttl)
            first = await pipe.execute()
        accepted = late = duplicate = 0
        waiting: list[Outcome] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for outcome, raw, fresh in zip(outcomes, found, first, strict=True):
                if raw is None:
                    waiting.append(outcome)
                    if fresh:  # an unknown id may still be reported again later
                        pipe.delete(f"{self._ns}joined:{outcome.key}")
                    continue
                prediction = Prediction.from_dict(json.loads(raw))
                quality = self._quality(prediction.model, prediction.variant)
                if not fresh:
                    duplicate += 1
                    self._increments(pipe, quality, {"duplicate": 1})
                    continue
                fields = outcome_fields(prediction, outcome, now, self._max_lag_s)
                late += int("late" in fields)
                accepted += int("late" not in fields)
                self._increments(pipe, quality, fields)
            if waiting and count_unmatched:
                pipe.incrby(f"{self._ns}outcomes:unmatched", len(waiting))
            await pipe.execute()
        return Reported(accepted, len(waiting), late, duplicate, tuple(waiting))

    async def refresh(self) -> None:
        try:
            totals: dict[Key, QualityTotals] = {}
            async for key in self._client.scan_iter(match=f"{self._ns}quality:*", count=500):
                model, _, variant = key.decode().removeprefix(f"{self._ns}quality:").partition("\x1f")
                fields = await self._client.hgetall(key)
                counters = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in fields.items()}
                totals[(model, variant)] = QualityTotals.from_fields(counters)
            unmatched = await self._client.get(f"{self._ns}outcomes:unmatched")
            self._totals, self.unmatched = totals, int(unmatched or 0)
        except (RedisError, OSError) as exc:
            log.warning("feedback counters not refreshed: redis: %s", exc)

    def totals(self) -> dict[Key, QualityTotals]:
        return dict(self._totals)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
