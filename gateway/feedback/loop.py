"""The feedback loop: predictions read from the core's observations (`consume`, fed by the
observation reader), kept until their outcomes are reported, and joined."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.config.schema import GatewayConfig
from gateway.feedback.quality import Outcome, Prediction, QualityTotals
from gateway.feedback.store import FeedbackStore, MemoryFeedback, RedisFeedback, Reported

__all__ = ["Feedback"]

_RETRY_S = 0.05  # how often held outcomes look for their prediction again


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
        self._hold_s = settings.hold_s

    async def report(self, outcomes: Sequence[Outcome]) -> Reported:
        """Join `outcomes` to their predictions. One whose prediction is not here yet (a label that
        came back within milliseconds of its answer overtakes the prediction's way from the core)
        is tried again until `feedback.hold_s` has passed; only then does it count as unmatched."""
        reported = await self.store.report(outcomes, self._clock(), count_unmatched=not self._hold_s)
        give_up = time.monotonic() + self._hold_s
        try:
            while reported.waiting and self._hold_s and time.monotonic() < give_up:
                await asyncio.sleep(_RETRY_S)
                reported += await self.store.report(reported.waiting, self._clock(), count_unmatched=False)
        except asyncio.CancelledError:  # the caller left (its deadline was shorter): what waits is unmatched
            await asyncio.shield(self.store.count_unmatched(len(reported.waiting)))
            raise
        if self._hold_s:
            await self.store.count_unmatched(len(reported.waiting))
        return reported

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
