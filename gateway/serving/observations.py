"""The core's observation stream, read in batches on a thread that waits without the GIL, parsed
once and handed to whoever consumes it (feedback, drift). The stream is bounded in the core:
when this falls behind, records are dropped there and counted (`gateway_core_dropped`)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

__all__ = ["ObservationReader"]

log = logging.getLogger(__name__)
Pull = Callable[[int, float], list[str]]  # Core.next_observations(max, timeout_s)
Sink = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]


class ObservationReader:
    def __init__(self, pull: Pull, sinks: Sequence[Sink]) -> None:
        self._pull, self._sinks = pull, list(sinks)
        self.read = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def _follow(self) -> None:
        while not self._stopping:
            texts = await asyncio.to_thread(self._pull, 1024, 0.5)
            self.read += len(texts)
            batch = []
            for text in texts:
                try:
                    batch.append(json.loads(text))
                except ValueError as exc:  # one bad record, not the loop
                    log.warning("observation not read (%s): %s", exc, text[:200])
            for sink in self._sinks:
                try:
                    await sink(batch)
                except Exception:  # a bug in one consumer must not starve the others
                    log.exception("observation consumer failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await asyncio.wait([self._task], timeout=2.0)
            self._task.cancel()
