"""Drift on the observation stream's sampled tensors: features read from each sampled request,
fed to the monitor; a window that closes in alert calls the retraining trigger."""

from __future__ import annotations

import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway.audit import AuditTrail
from gateway.config.schema import GatewayConfig
from gateway.drift.features import arrays_features, observation_features
from gateway.drift.monitor import DriftMonitor, Reference
from gateway.drift.trigger import RetrainingTrigger

__all__ = ["Drift"]

log = logging.getLogger(__name__)
_SOURCE = "__source__"  # the reference's origin, stored beside its features


class Drift:
    def __init__(self, config: GatewayConfig, main_variant: Callable[[str], str | None], audit: AuditTrail | None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.settings = config.drift
        self.monitor = DriftMonitor(config.drift, main_variant, clock)
        webhook = config.drift.webhook
        self.trigger = RetrainingTrigger(webhook, audit, clock) if webhook else None
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
                self.monitor.set_reference(urllib.parse.unquote(path.stem), features, source)
            except (OSError, ValueError) as exc:
                log.error("drift reference %s not loaded: %s", path, exc)

    def _save_reference(self, model: str) -> None:
        path, reference = self._path(model), self.monitor.references.get(model)
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
        for observation in observations:
            if observation.get("method") != "ModelInfer" or observation.get("code") != "OK":
                continue
            started = time.perf_counter()
            try:
                features = observation_features(observation, self.settings.max_elements)
            except (ValueError, TypeError) as exc:
                log.warning("sampled request not read for drift: %s", exc)
                continue
            if features is None:
                continue
            self.sampled += 1
            model = observation["model"]
            frozen = model in self.monitor.references
            alert = self.monitor.observe(model, observation["variant"], features)
            if not frozen and model in self.monitor.references:
                self._save_reference(model)
            self.seconds += time.perf_counter() - started
            if alert is not None:
                self.alerts += 1
                if self.trigger is not None:
                    self.trigger.fire(alert)

    def upload_reference(self, model: str, arrays: Mapping[str, np.ndarray]) -> Reference:
        features = arrays_features(arrays, self.settings.max_elements)
        if not features:
            raise ValueError("the reference has no numeric array whose first axis is the records")
        reference = self.monitor.set_reference(model, features, "uploaded")
        self._save_reference(model)
        return reference

    async def close(self) -> None:
        if self.trigger is not None:
            await self.trigger.close()
