"""Drift on the observation stream's sampled tensors: features read from each sampled request,
fed to the windows (this gateway's `DriftMonitor`, or the fleet's `RedisWindows` when replicas
share Redis); a window that closes in alert calls the retraining trigger."""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.audit import AuditTrail
from gateway.config.schema import GatewayConfig
from gateway.drift.features import Features, arrays_features, observation_features
from gateway.drift.monitor import Alert, DriftMonitor, Reference, VariantView
from gateway.drift.shared import RedisCooldown, RedisWindows, close_client
from gateway.drift.trigger import Cooldown, LocalCooldown, RetrainingTrigger
from gateway.errors import UpstreamUnavailable

__all__ = ["Drift"]

log = logging.getLogger(__name__)
_SOURCE = "__source__"  # the reference's origin, stored beside its features
_REFRESH_S = 1.0  # how often the fleet's windows are read back (shared Redis)


class Drift:
    def __init__(self, config: GatewayConfig, main_variant: Callable[[str], str | None], audit: AuditTrail | None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.settings = config.drift
        url, namespace = config.shared.redis_url, config.shared.namespace
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0) if url else None
        self.monitor = DriftMonitor(config.drift, main_variant, clock)  # used without shared Redis
        self.shared = RedisWindows(self._client, namespace, config.drift, main_variant, clock) if self._client else None
        self.cooldown: Cooldown = RedisCooldown(self._client, namespace) if self._client else LocalCooldown(clock)
        webhook = config.drift.webhook
        self.trigger = RetrainingTrigger(webhook, audit, self.cooldown) if webhook else None
        self._refreshed = -math.inf
        self._offered: dict[str, Reference] = {}  # kept on disk, offered to the fleet at the first refresh
        self.sampled = 0
        self.alerts = 0
        self.seconds = 0.0  # spent on drift statistics (features and windows), for its cost per sample
        self._load_references()

    def _path(self, model: str) -> Path | None:
        folder = self.settings.reference_dir
        return None if folder is None else folder / f"{urllib.parse.quote(model, safe='')}.npz"

    def _load_references(self) -> None:
        folder = self.settings.reference_dir
        if folder is None or not folder.is_dir():
            return
        for path in sorted(folder.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as data:
                    features = {name: data[name] for name in data.files if name != _SOURCE}
                    source = str(data[_SOURCE]) if _SOURCE in data.files else "loaded"
                model = urllib.parse.unquote(path.stem)
                if self.shared is None:
                    self.monitor.set_reference(model, features, source)
                else:
                    self._offered[model] = Reference(source, features, max(len(v) for v in features.values()))
            except (OSError, ValueError) as exc:
                log.error("drift reference %s not loaded: %s", path, exc)

    @property
    def references(self) -> dict[str, Reference]:
        return self.shared.references if self.shared is not None else self.monitor.references

    def views(self) -> dict[tuple[str, str], VariantView]:
        return self.shared.views() if self.shared is not None else self.monitor.views()

    def collecting(self, model: str) -> int:
        return self.shared.collecting(model) if self.shared is not None else self.monitor.collecting(model)

    def _save_reference(self, model: str) -> None:
        path, reference = self._path(model), self.references.get(model)
        if path is None or reference is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp.npz")
            arrays: dict[str, Any] = {**reference.features, _SOURCE: np.array(reference.source)}
            np.savez(temporary, **arrays)
            os.replace(temporary, path)
        except OSError as exc:
            log.error("drift reference for %s not saved in %s: %s", model, path, exc)

    async def consume(self, observations: Sequence[Mapping[str, Any]]) -> None:
        samples: list[tuple[str, str, Features]] = []
        for observation in observations:
            if observation.get("method") != "ModelInfer" or observation.get("code") != "OK":
                continue
            started = time.perf_counter()
            try:
                features = observation_features(observation, self.settings.max_elements)
            except (ValueError, TypeError) as exc:
                log.warning("sampled request not read for drift: %s", exc)
                continue
            self.seconds += time.perf_counter() - started
            if features is not None:
                samples.append((observation["model"], observation["variant"], features))
        self.sampled += len(samples)
        started = time.perf_counter()
        alerts = await (self._shared(samples) if self.shared is not None else self._local(samples))
        self.seconds += time.perf_counter() - started
        for alert in alerts:
            self.alerts += 1
            if self.trigger is not None:
                await self.trigger.fire(alert)

    async def _local(self, samples: Sequence[tuple[str, str, Features]]) -> list[Alert]:
        alerts = []
        for model, variant, features in samples:
            frozen = model in self.monitor.references
            alert = self.monitor.observe(model, variant, features)
            if not frozen and model in self.monitor.references:
                self._save_reference(model)
            if alert is not None:
                alerts.append(alert)
        return alerts

    async def _shared(self, samples: Sequence[tuple[str, str, Features]]) -> list[Alert]:
        assert self.shared is not None
        await self.refresh(at_most_every_s=_REFRESH_S)
        try:
            alerts, frozen = await self.shared.observe(samples)
        except (RedisError, OSError) as exc:  # the samples are lost; the requests were served
            log.warning("%d drift samples not recorded: redis: %s", len(samples), exc)
            return []
        for model in frozen:
            self._save_reference(model)
        return alerts

    async def refresh(self, at_most_every_s: float = 0.0) -> None:
        """The fleet's windows read back (shared Redis; nothing to do otherwise)."""
        if self.shared is None or time.monotonic() - self._refreshed < at_most_every_s:
            return
        self._refreshed = time.monotonic()
        try:
            for model, reference in list(self._offered.items()):
                await self.shared.offer_reference(model, reference.features, reference.source)
                del self._offered[model]
            await self.shared.refresh()
            if isinstance(self.cooldown, RedisCooldown):
                await self.cooldown.refresh()
        except (RedisError, OSError) as exc:  # what is shown stays as of the last refresh
            log.warning("drift windows not read back: redis: %s", exc)

    async def upload_reference(self, model: str, arrays: Mapping[str, np.ndarray]) -> Reference:
        features = arrays_features(arrays, self.settings.max_elements)
        if not features:
            raise ValueError("the reference has no numeric array whose first axis is the records")
        if self.shared is not None:
            try:
                reference = await self.shared.set_reference(model, features, "uploaded")
            except (RedisError, OSError) as exc:
                raise UpstreamUnavailable(f"drift reference for {model} not stored: redis: {exc}") from exc
        else:
            reference = self.monitor.set_reference(model, features, "uploaded")
        self._save_reference(model)
        return reference

    async def close(self) -> None:
        if self.trigger is not None:
            await self.trigger.close()
        if self._client is not None:
            await close_client(self._client)
