"""The feedback loop: predictions pulled from the core's observation stream in batches (on a
thread that waits without the GIL), kept until their outcomes are reported, and joined."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence

from gateway.config import GatewayConfig
from gateway.feedback.quality import Outcome, Prediction, QualityTotals
from gateway.feedback.store import FeedbackStore, MemoryFeedback, RedisFeedback, Reported

__all__ = ["Feedback"]

log = logging.getLogger(__name__)
Pull = Callable[[int, float], list[str]]  # Core.next_observations(max, timeout_s)


class Feedback:
    def __init__(self, config: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        settings, shared = config.feedback, config.shared
        self.store: FeedbackStore = (
            RedisFeedback(shared.redis_url, shared.namespace, settings.ttl_s, settings.max_label_lag_s)
            if shared.redis_url
            else MemoryFeedback(settings.max_records, settings.ttl_s, settings.max_label_lag_s)
        )
        self._clock = clock
        self.observed = 0  # observations read from the core
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def report(self, outcomes: Sequence[Outcome]) -> Reported:
        return await self.store.report(outcomes, self._clock())

    def totals(self) -> dict[tuple[str, str], QualityTotals]:
        return self.store.totals()

    async def _follow(self, pull: Pull) -> None:
        refreshed = 0.0
        while not self._stopping:
            texts = await asyncio.to_thread(pull, 1024, 0.5)
            self.observed += len(texts)
            predictions = []
            for text in texts:
                try:
                    prediction = Prediction.from_observation(json.loads(text))
                except (ValueError, KeyError, TypeError) as exc:  # one bad record, not the loop
                    log.warning("observation not read (%s): %s", exc, text[:200])
                    continue
                if prediction is not None:
                    predictions.append(prediction)
            if predictions:
                await self.store.add(predictions)
            if time.monotonic() - refreshed > 1.0:
                await self.store.refresh()
                refreshed = time.monotonic()

    def start(self, pull: Pull) -> None:
        self._task = asyncio.create_task(self._follow(pull))

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=2.0)
            self._task.cancel()
        await self.store.close()
