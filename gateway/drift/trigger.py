"""The retraining trigger: a webhook called when a variant has drifted, with an idempotency key
(the same alert is one key however often it is retried), retries with exponential back-off, a
cooldown per model and variant, and each outcome in the audit trail."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from gateway.audit import AuditTrail
from gateway.config.schema import DriftWebhookConfig
from gateway.drift.monitor import Alert
from gateway.webhook import post_json, secret_of

__all__ = ["RetrainingTrigger"]

log = logging.getLogger(__name__)


class RetrainingTrigger:
    def __init__(self, settings: DriftWebhookConfig, audit: AuditTrail | None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.settings, self._audit, self._clock = settings, audit, clock
        self._last: dict[tuple[str, str], float] = {}
        self.fired = 0
        self.skipped = 0  # alerts inside a cooldown
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

    def fire(self, alert: Alert) -> bool:
        """Sends it in the background unless the variant is inside its cooldown."""
        where = (alert.result.model, alert.result.variant)
        now = self._clock()
        if now - self._last.get(where, -1e18) < self.settings.cooldown_s:
            self.skipped += 1
            return False
        self._last[where] = now
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
        self.fired += ok
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
