"""Micro-batching on the ModelInfer path: the async shell around `batching`.

One `ModelBatcher` per (pool, upstream model, version, merge key). Callers wait on a future; a
merged call is a task owned by the batcher, so a caller that leaves (cancelled, deadline) does not
cancel the call the others are waiting on. Every caller was validated on its own before it got
here, so one bad input never fails a batch. A single caller goes upstream with its own bytes.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tritonclient.grpc import service_pb2

from batching import BatchQueue, MergeError, Pending, merge, merge_key, rows, split
from gateway.config import GatewayConfig
from gateway.errors import DeadlineExceeded, GatewayError
from gateway.route_policies import BatchSettings, batch_settings
from gateway.signature import ModelSignature
from gateway.telemetry import current, detached
from gateway.upstream import ModelKey, Pool

if TYPE_CHECKING:
    from gateway.dataplane import Prepared

__all__ = ["BATCH_KEY", "BatchSettings", "BatchStats", "Batchers", "ModelBatcher"]

log = logging.getLogger(__name__)

BATCH_KEY = "x-batch-size"  # response (trailing) metadata: callers that shared the upstream call


@dataclass
class BatchStats:
    calls: int = 0  # upstream calls made by batchers
    merged_calls: int = 0  # of which carried more than one caller
    requests: int = 0  # callers served through batchers
    expired: int = 0  # callers whose deadline passed while they waited for a batch
    sizes: dict[int, int] = field(default_factory=dict)  # callers per call → calls


@dataclass(frozen=True, slots=True)
class _Answer:
    response: bytes
    shared: int  # callers in the upstream call
    upstream_s: float  # how long that call took


@dataclass(slots=True)
class _Caller:
    prepared: Prepared  # its payload: the caller's own bytes, as they would go upstream alone
    answer: asyncio.Future[_Answer]
    context: contextvars.Context  # the caller's trace context, for the call it leads


class ModelBatcher:
    def __init__(
        self,
        pool: Pool,
        model: ModelKey,
        max_rows: int,
        max_inflight: int,
        stats: BatchStats,
        on_idle: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self._on_idle = on_idle
        self.model = model
        self.stats = stats
        self._queue: BatchQueue[_Caller] = BatchQueue(max_rows, max_inflight)
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump_scheduled = False

    async def submit(self, prepared: Prepared, timeout: float | None) -> bytes:
        answer: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        caller = _Caller(prepared, answer, contextvars.copy_context())
        deadline = None if timeout is None else self._clock() + timeout
        self._queue.add(caller, rows(prepared.request) or 1, deadline)
        self._schedule_pump()
        result = await caller.answer
        if (record := current()) is not None:
            record.trailing.append((BATCH_KEY, str(result.shared)))
            record.upstream_s += result.upstream_s
        return result.response

    def _schedule_pump(self) -> None:
        """Take a batch at the end of this turn of the event loop, not at once: the callers whose
        requests gRPC delivered in the same turn leave together (no timer, no added wait)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        while self._queue.ready():
            batch, expired = self._queue.take(self._clock(), lambda caller: not caller.answer.done())
            for late in expired:
                self.stats.expired += 1
                late.item.answer.set_exception(DeadlineExceeded("the deadline passed while waiting for a batch"))
            if not batch:
                break
            # In the first caller's context (its trace carries the call), with no request record.
            task = asyncio.get_running_loop().create_task(self._send(batch), context=batch[0].item.context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if not self._queue and not self._queue.inflight:
            self._on_idle()  # nothing waits here: the batcher may go (merge keys can be many)

    async def _send(self, batch: list[Pending[_Caller]]) -> None:
        callers = [pending.item for pending in batch]
        # The call lasts as long as the most patient caller allows; gRPC ends the others' RPCs at
        # their own deadlines, so a hurried caller never shortens the call for the rest.
        deadlines = [pending.deadline for pending in batch]
        latest = None if None in deadlines else max(d for d in deadlines if d is not None)
        timeout = None if latest is None else max(latest - self._clock(), 0.001)
        self.stats.calls += 1
        self.stats.requests += len(callers)
        self.stats.sizes[len(callers)] = self.stats.sizes.get(len(callers), 0) + 1
        started = self._clock()
        try:
            with detached():  # each caller adds the call's time to its own record
                if len(callers) == 1:
                    answers = [await self.pool.call("ModelInfer", callers[0].prepared.payload, timeout, self.model)]
                else:
                    self.stats.merged_calls += 1
                    answers = await self._merged(callers, timeout)
            elapsed = self._clock() - started
            for caller, answer in zip(callers, answers, strict=True):
                if not caller.answer.done():
                    caller.answer.set_result(_Answer(answer, len(callers), elapsed))
        except Exception as exc:  # every caller of the batch gets the failure; none is left waiting
            if not isinstance(exc, GatewayError):
                log.error("merged call for %s failed", self.model, exc_info=exc)
            for caller in callers:
                if not caller.answer.done():
                    caller.answer.set_exception(exc)
        finally:
            self._queue.done()
            self._schedule_pump()

    async def _merged(self, callers: list[_Caller], timeout: float | None) -> list[bytes]:
        requests = [caller.prepared.request for caller in callers]
        merged = merge(requests, [caller.prepared.tensors for caller in callers])
        merged.model_name, merged.model_version = self.model
        response = await self.pool.call("ModelInfer", merged.SerializeToString(), timeout, self.model)
        try:
            parts = split(service_pb2.ModelInferResponse.FromString(response), requests)
        except MergeError as exc:
            raise GatewayError(f"cannot split the batched answer of model '{self.model[0]}': {exc}") from exc
        return [part.SerializeToString() for part in parts]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Batchers:
    """The batchers of a gateway, made on first use; requests that cannot merge pass through."""

    def __init__(self, config: GatewayConfig) -> None:
        self.stats = BatchStats()
        self._batchers: dict[tuple[str, ModelKey, Hashable], ModelBatcher] = {}
        self.reconfigure(config)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Routes' batching settings (after a reload, for the batchers made from then on)."""
        self._default, self._per_route = batch_settings(config)

    def settings(self, route: str, signature: ModelSignature) -> BatchSettings | None:
        """How to batch a route's requests to a model; None: not at all (off, or the model does not batch)."""
        settings = self._per_route.get(route, self._default)
        if settings is None or signature.max_batch_size <= 0 or signature.decoupled:
            return None
        if settings.max_batch_size > signature.max_batch_size:
            return dataclasses.replace(settings, max_batch_size=signature.max_batch_size)
        return settings

    async def call(
        self,
        pool: Pool,
        model: ModelKey,
        prepared: Prepared,
        settings: BatchSettings,
        timeout: float | None,
    ) -> bytes:
        key = merge_key(prepared.request, prepared.tensors)
        size = rows(prepared.request)
        if key is None or size is None or size >= settings.max_batch_size:
            return await pool.call("ModelInfer", prepared.payload, timeout, model)
        where = (pool.name, model, key)
        batcher = self._batchers.get(where)
        if batcher is None:
            batcher = ModelBatcher(
                pool, model, settings.max_batch_size, settings.max_inflight, self.stats,
                on_idle=lambda: self._forget(where),
            )  # fmt: skip
            self._batchers[where] = batcher
        return await batcher.submit(prepared, timeout)

    def _forget(self, where: tuple[str, ModelKey, Hashable]) -> None:
        self._batchers.pop(where, None)

    async def close(self) -> None:
        await asyncio.gather(*(batcher.close() for batcher in self._batchers.values()))
