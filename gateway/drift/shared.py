"""Drift windows that belong to the model, not to one replica: with replicas sharing Redis, every
replica's samples go into one open window per model and variant (a Redis list), and exactly one
replica, the one whose samples fill it, closes it (a script renames the list away atomically),
judges it against the shared reference and records the verdict; so one window, one verdict and
one retraining trigger for the fleet, which needs no more traffic than one gateway to notice.

Keys under `{namespace}drift:`: `reference:{model}` (a hash: source, samples, version, npz),
`collect:{model}` (the main variant's first samples, until the reference freezes),
`window:{model}\\x1f{variant}` (the open window), `variant:{model}\\x1f{variant}` (a hash:
started, windows, consecutive, judged, last), `variants:{model}` and `models` (sets, for
reading back), `cooldown:{model}\\x1f{variant}` and `triggers` (the retraining trigger's).
Each sample is a JSON object of feature -> values.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.config.schema import DriftConfig
from gateway.drift.features import Features
from gateway.drift.monitor import Alert, Reference, VariantView, WindowResult, alert_of, judge
from gateway.drift.stats import FeatureDrift, Thresholds

__all__ = ["RedisCooldown", "RedisWindows"]

log = logging.getLogger(__name__)
# KEYS: open window, variant hash, the prefix of the names windows take when they close (unique
# per call; each expires in 10 minutes should the replica that closed it die before judging it).
# ARGV: now, window_samples, window_s (0: none), min_samples, samples... A window closes at
# exactly `window_samples` (or on time), so a call may close several. Returns, per window this
# call closed: its number, its start, the name it took.
_PUSH = """
local now, limit, window_s, least = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local closed = {}
for i = 5, #ARGV do
  local n = redis.call('RPUSH', KEYS[1], ARGV[i])
  local started = redis.call('HGET', KEYS[2], 'started')
  if not started then started = ARGV[1]; redis.call('HSET', KEYS[2], 'started', started) end
  local by_time = window_s > 0 and now - tonumber(started) >= window_s
  if n >= limit or (by_time and n >= least) then
    local number = redis.call('HINCRBY', KEYS[2], 'windows', 1)
    local name = KEYS[3] .. ':' .. number
    redis.call('RENAME', KEYS[1], name)
    redis.call('EXPIRE', name, 600)
    redis.call('HDEL', KEYS[2], 'started')
    table.insert(closed, {number, started, name})
  end
end
return closed
"""

# KEYS: variant hash. ARGV: the window's number, drifted (1/0), its result (JSON).
# Returns the drifted windows in a row, this one included (a verdict older than the last one
# recorded leaves the hash alone).
_JUDGED = """
local judged = tonumber(redis.call('HGET', KEYS[1], 'judged')) or 0
local consecutive = tonumber(redis.call('HGET', KEYS[1], 'consecutive')) or 0
if tonumber(ARGV[1]) < judged then return consecutive end
if ARGV[2] == '1' then consecutive = consecutive + 1 else consecutive = 0 end
redis.call('HSET', KEYS[1], 'judged', ARGV[1], 'consecutive', consecutive, 'last', ARGV[3])
return consecutive
"""

# KEYS: the reference's collection, the reference hash, the collection's name once full.
# ARGV: samples needed, samples... Returns {-1, 0} when a reference exists; {0, taken} when this
# call filled the collection with its first `taken` samples (the caller freezes it); else
# {samples collected, all taken}.
_COLLECT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
local needed, n = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  n = redis.call('RPUSH', KEYS[1], ARGV[i])
  if n >= needed then
    redis.call('RENAME', KEYS[1], KEYS[3])
    redis.call('EXPIRE', KEYS[3], 600)
    return {0, i - 1}
  end
end
return {n, #ARGV - 1}
"""

# KEYS: reference hash. ARGV: source, samples, npz, only-if-absent (1/0). Returns the version set, or 0.
_REFERENCE = """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'source', ARGV[1], 'samples', ARGV[2], 'npz', ARGV[3])
return version
"""


def _encode(features: Features) -> str:
    return json.dumps({name: values.tolist() for name, values in features.items()})


def _arrays(samples: Sequence[bytes | str]) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for raw in samples:
        for name, values in json.loads(raw).items():
            parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _npz(features: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **features)  # type: ignore[arg-type]
    return buffer.getvalue()


def _result(text: bytes | str, consecutive: int) -> WindowResult:
    data = json.loads(text)
    features = [FeatureDrift(**f) for f in data.pop("features")]
    return WindowResult(**{**data, "features": features, "consecutive": consecutive})


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


class RedisWindows:
    """The shared counterpart of `DriftMonitor`: the same windows and verdicts, in Redis. What it
    shows (`references`, `views`, `collecting`) is as of its last `refresh`."""

    def __init__(self, client: redis.Redis, namespace: str, settings: DriftConfig,
                 main_variant: Callable[[str], str | None], clock: Callable[[], float]) -> None:  # fmt: skip
        self._client, self._ns = client, f"{namespace}drift:"
        self.settings, self._main, self._clock = settings, main_variant, clock
        self.thresholds = Thresholds(settings.bins, settings.psi_warn, settings.psi_alert, settings.ks_alpha)
        self.references: dict[str, Reference] = {}
        self._versions: dict[str, int] = {}
        self._views: dict[tuple[str, str], VariantView] = {}
        self._collecting: dict[str, int] = {}
        self._push = client.register_script(_PUSH)
        self._judged = client.register_script(_JUDGED)
        self._collect = client.register_script(_COLLECT)
        self._reference = client.register_script(_REFERENCE)

    def _key(self, kind: str, model: str, variant: str | None = None) -> str:
        return f"{self._ns}{kind}:{model}" + ("" if variant is None else f"\x1f{variant}")

    def views(self) -> dict[tuple[str, str], VariantView]:
        return dict(self._views)

    def collecting(self, model: str) -> int:
        return self._collecting.get(model, 0)

    async def observe(self, samples: Sequence[tuple[str, str, Features]]) -> tuple[list[Alert], list[str]]:
        """Samples (model, variant, features) into the shared windows: the alerts of the windows
        this call closed, and the models whose reference it froze."""
        grouped: dict[tuple[str, str], list[str]] = {}
        for model, variant, features in samples:
            grouped.setdefault((model, variant), []).append(_encode(features))
        alerts: list[Alert] = []
        frozen: list[str] = []
        for (model, variant), encoded in grouped.items():
            await self._client.sadd(f"{self._ns}models", model)
            if model not in self.references:
                taken = await self._to_reference(model, variant, encoded)
                if model in self.references and taken:
                    frozen.append(model)
                encoded = encoded[taken:]  # what the reference did not take goes to the window, if there is one
                if model not in self.references or not encoded:
                    continue
            await self._client.sadd(self._key("variants", model), variant)
            alerts += await self._to_window(model, variant, encoded)
        return alerts, frozen

    async def _to_reference(self, model: str, variant: str, encoded: list[str]) -> int:
        """The samples the reference's collection took (all of them until it is full)."""
        main = self._main(model)
        if main is not None and variant != main:  # not the reference's: the window's, if there is one
            await self._load_reference(model)
            return 0
        full = f"{self._key('collect', model)}:{uuid.uuid4().hex}"
        keys = [self._key("collect", model), self._key("reference", model), full]
        collected, taken = await self._collect(keys=keys, args=[self.settings.reference_samples, *encoded])
        if int(collected) == -1:  # frozen meanwhile, by another replica
            await self._load_reference(model)
        elif int(collected) == 0:
            try:
                features = _arrays(await self._client.lrange(full, 0, -1))
                source = f"frozen from variant {variant}'s first samples"
                if not await self._set_reference(model, features, source, only_if_absent=True):
                    await self._load_reference(model)
            finally:
                await self._client.delete(full)
        else:
            self._collecting[model] = int(collected)
        return int(taken)

    async def _to_window(self, model: str, variant: str, encoded: list[str]) -> list[Alert]:
        settings, state = self.settings, self._key("variant", model, variant)
        keys = [self._key("window", model, variant), state, f"{self._key('window', model, variant)}:{uuid.uuid4().hex}"]
        args = [self._clock(), settings.window_samples, settings.window_s or 0, settings.min_samples, *encoded]
        alerts = []
        for number, started, name in await self._push(keys=keys, args=args):
            try:
                window = _arrays(await self._client.lrange(name, 0, -1))
            finally:
                await self._client.delete(name)
            alert = await self._judge(model, variant, int(number), float(started), window)
            if alert is not None:
                alerts.append(alert)
        return alerts

    async def _judge(self, model: str, variant: str, number: int, started: float,
                     window: dict[str, np.ndarray]) -> Alert | None:  # fmt: skip
        rows = max((len(v) for v in window.values()), default=0)
        features, share, drifted = judge(self.references[model].features, window, self.settings, self.thresholds)
        result = WindowResult(model, variant, number, started, self._clock(), rows, features, share, drifted, 0)
        text = json.dumps({k: v for k, v in asdict(result).items() if k != "consecutive"})
        state = self._key("variant", model, variant)
        consecutive = int(await self._judged(keys=[state], args=[number, int(drifted), text]))
        result = WindowResult(**{**asdict(result), "features": features, "consecutive": consecutive})
        self._views[(model, variant)] = VariantView(number, 0, consecutive, result)
        return alert_of(result, self.settings)

    async def set_reference(self, model: str, features: Mapping[str, np.ndarray], source: str) -> Reference:
        """An uploaded reference: replaces the model's for every replica, and restarts its windows."""
        await self._set_reference(model, features, source, only_if_absent=False)
        variants = [_text(v) for v in await self._client.smembers(self._key("variants", model))]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("collect", model))
            for variant in variants:
                pipe.delete(self._key("window", model, variant))
                pipe.hset(self._key("variant", model, variant), "consecutive", 0)
                pipe.hdel(self._key("variant", model, variant), "started")
            await pipe.execute()
        return self.references[model]

    async def offer_reference(self, model: str, features: Mapping[str, np.ndarray], source: str) -> None:
        """A reference kept on this replica's disk: the fleet's, unless it has one already."""
        if not await self._set_reference(model, features, source, only_if_absent=True):
            await self._load_reference(model)

    async def _set_reference(self, model: str, features: Mapping[str, np.ndarray], source: str,
                             only_if_absent: bool) -> bool:  # fmt: skip
        rows = max((len(v) for v in features.values()), default=0)
        args: list[str | int | bytes] = [source, rows, _npz(features), int(only_if_absent)]
        version = int(await self._reference(keys=[self._key("reference", model)], args=args))
        if not version:
            return False
        self.references[model], self._versions[model] = Reference(source, dict(features), rows), version
        self._collecting.pop(model, None)
        return True

    async def _load_reference(self, model: str) -> None:
        fields = await self._client.hgetall(self._key("reference", model))
        if not fields:
            self.references.pop(model, None)
            return
        fields = {_text(k): v for k, v in fields.items()}
        npz = fields["npz"]
        with np.load(io.BytesIO(npz if isinstance(npz, bytes) else npz.encode()), allow_pickle=False) as data:
            features = {name: data[name] for name in data.files}
        self.references[model] = Reference(_text(fields["source"]), features, int(fields["samples"]))
        self._versions[model] = int(fields["version"])

    async def refresh(self) -> None:
        """What every replica did, read back: references (when their version changed), the
        reference's collection, each variant's windows and last verdict."""
        models = sorted(_text(m) for m in await self._client.smembers(f"{self._ns}models"))
        views: dict[tuple[str, str], VariantView] = {}
        for model in models:
            version = await self._client.hget(self._key("reference", model), "version")
            if version is None:
                self.references.pop(model, None)
                self._collecting[model] = int(await self._client.llen(self._key("collect", model)))
                continue
            if int(version) != self._versions.get(model):
                await self._load_reference(model)
            self._collecting.pop(model, None)
            for variant in sorted(_text(v) for v in await self._client.smembers(self._key("variants", model))):
                fields = await self._client.hgetall(self._key("variant", model, variant))
                state = {_text(k): v for k, v in fields.items()}
                open_window = int(await self._client.llen(self._key("window", model, variant)))
                consecutive = int(state.get("consecutive", 0))
                last = _result(state["last"], consecutive) if "last" in state else None
                # `judged`: the last window judged (one closed and still being judged is not shown yet)
                views[(model, variant)] = VariantView(int(state.get("judged", 0)), open_window, consecutive, last)
        self._views = views


class RedisCooldown:
    """The retraining trigger's cooldown and counts, the fleet's: a key set with NX and a TTL."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._client, self._ns = client, f"{namespace}drift:"
        self.fired = self.skipped = 0

    async def claim(self, model: str, variant: str, seconds: float) -> bool:
        if seconds <= 0:
            return True
        key = f"{self._ns}cooldown:{model}\x1f{variant}"
        return bool(await self._client.set(key, 1, nx=True, px=max(int(seconds * 1000), 1)))

    async def count(self, outcome: str) -> None:
        setattr(self, outcome, int(await self._client.hincrby(f"{self._ns}triggers", outcome, 1)))

    async def refresh(self) -> None:
        counts: dict[Any, Any] = await self._client.hgetall(f"{self._ns}triggers")
        counts = {_text(k): int(v) for k, v in counts.items()}
        self.fired, self.skipped = counts.get("fired", 0), counts.get("skipped", 0)


async def close_client(client: redis.Redis) -> None:
    with contextlib.suppress(RedisError, OSError):
        await client.aclose()
