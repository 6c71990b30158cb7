"""Drift on the observation stream's sampled tensors: features read from each sampled request,
fed to the monitor; a window that closes in alert calls the retraining trigger."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gateway.audit import AuditTrail
from gateway.config import GatewayConfig
from gateway.drift.features import arrays_features, observation_features
from gateway.drift.monitor import DriftMonitor, Reference
from gateway.drift.trigger import RetrainingTrigger

__all__ = ["Drift"]

log = logging.getLogger(__name__)


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
            alert = self.monitor.observe(observation["model"], observation["variant"], features)
            self.seconds += time.perf_counter() - started
            if alert is not None:
                self.alerts += 1
                if self.trigger is not None:
                    self.trigger.fire(alert)

    def upload_reference(self, model: str, arrays: Mapping[str, np.ndarray]) -> Reference:
        features = arrays_features(arrays, self.settings.max_elements)
        if not features:
            raise ValueError("the reference has no numeric array whose first axis is the records")
        return self.monitor.set_reference(model, features, "uploaded")

    async def close(self) -> None:
        if self.trigger is not None:
            await self.trigger.close()
