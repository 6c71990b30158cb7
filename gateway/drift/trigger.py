"""The retraining trigger: a webhook called when a variant has drifted, with an idempotency key
(the same alert is one key however often it is retried), retries with exponential back-off, a
cooldown per model and variant (this gateway's, or the fleet's through its `Cooldown` in Redis),
and each outcome in the audit trail."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from gateway.audit import AuditTrail
from gateway.config.schema import DriftWebhookConfig
from gateway.drift.monitor import Alert
from gateway.webhook import post_json, secret_of

__all__ = ["Cooldown", "LocalCooldown", "RetrainingTrigger"]

log = logging.getLogger(__name__)


class Cooldown(Protocol):
    """Who may fire for a model and variant now, and the counts of what was fired and skipped."""

    fired: int
    skipped: int  # alerts inside a cooldown

    async def claim(self, model: str, variant: str, seconds: float) -> bool: ...
    async def count(self, outcome: str) -> None: ...  # "fired" | "skipped"


class LocalCooldown:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self.fired = self.skipped = 0

    async def claim(self, model: str, variant: str, seconds: float) -> bool:
        now = self._clock()
        if now - self._last.get((model, variant), -1e18) < seconds:
            return False
        self._last[(model, variant)] = now
        return True

    async def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class RetrainingTrigger:
    def __init__(self, settings: DriftWebhookConfig, audit: AuditTrail | None, cooldown: Cooldown) -> None:
        self.settings, self._audit, self.cooldown = settings, audit, cooldown
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        result = alert.result
        key = hashlib.sha256(f"{result.model}\x1f{result.variant}\x1f{result.number}\x1f{result.start}".encode())
        return {
            "model": result.model, "variant": result.variant, "idempotency_key": key.hexdigest()[:32],
            "window": {"number": result.number, "start": result.start, "end": result.end, "samples": result.samples},
            "drifted_share": result.drifted_share, "consecutive": result.consecutive,
            "features": [asdict(f) for f in result.features[:50]], "thresholds": alert.thresholds,
        }  # fmt: skip

    async def fire(self, alert: Alert) -> bool:
        """Sends it in the background unless the variant is inside its cooldown."""
        if not await self.cooldown.claim(alert.result.model, alert.result.variant, self.settings.cooldown_s):
            await self.cooldown.count("skipped")
            return False
        task = asyncio.get_running_loop().create_task(self._send(self.payload(alert)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True).encode()
        settings, status, text = self.settings, 0, ""
        secret = secret_of(settings.secret, settings.secret_env)
        headers = {"Idempotency-Key": payload["idempotency_key"]}
        for attempt in range(settings.retries + 1):
            status, text = await asyncio.to_thread(post_json, settings.url, body, settings.timeout_s, secret, headers)
            if 200 <= status < 300:
                break
            if attempt < settings.retries:
                await asyncio.sleep(0.5 * 2**attempt)
        ok = 200 <= status < 300
        if ok:
            await self.cooldown.count("fired")
        if not ok:
            log.error("retraining trigger for %s/%s failed: HTTP %s %s", payload["model"], payload["variant"], status,
                      text[:120])  # fmt: skip
        if self._audit is not None:
            self._audit.record("drift.retrain", payload["model"], actor=f"drift/{payload['model']}",
                               after={"variant": payload["variant"], "ok": ok, "status": status,
                                      "idempotency_key": payload["idempotency_key"], "window": payload["window"]},
                               reason=f"{payload['drifted_share']:.0%} of features drifted for "
                                      f"{payload['consecutive']} windows in a row")  # fmt: skip

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
