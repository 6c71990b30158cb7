"""The feedback loop: predictions read from the core's observations (`consume`, fed by the
observation reader), kept until their outcomes are reported, and joined."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config.schema import GatewayConfig
from gateway.feedback.quality import Outcome, Prediction, QualityTotals
from gateway.feedback.store import FeedbackStore, MemoryFeedback, RedisFeedback, Reported

__all__ = ["Feedback"]


class Feedback:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        settings, shared = config.feedback, config.shared
        self.store: FeedbackStore = (
            RedisFeedback(shared.redis_url, shared.namespace, settings.ttl_s, settings.max_label_lag_s)
            if shared.redis_url
            else MemoryFeedback(settings.max_records, settings.ttl_s, settings.max_label_lag_s)
        )
        self._clock = clock
        self._refreshed = 0.0

    async def report(self, outcomes: Sequence[Outcome]) -> Reported:
        return await self.store.report(outcomes, self._clock())

    def totals(self) -> dict[tuple[str, str], QualityTotals]:
        return self.store.totals()

    async def consume(self, observations: Sequence[Mapping[str, Any]]) -> None:
        predictions = [p for p in map(Prediction.from_observation, observations) if p is not None]
        if predictions:
            await self.store.add(predictions)
        if time.monotonic() - self._refreshed > 1.0:
            await self.store.refresh()
            self._refreshed = time.monotonic()

    async def close(self) -> None:
        await self.store.close()
