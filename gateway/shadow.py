"""Shadow traffic: copies of answered requests sent to other variants, outputs compared.

A copy starts only after the primary has its response, never delays or fails it, and is dropped
(and counted) when the shadow variant already has `max_inflight` copies under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from logging.handlers import RotatingFileHandler
from typing import TYPE_CHECKING

import numpy as np
from opentelemetry import trace
from tritonclient.grpc import service_pb2
from tritonclient.utils import triton_to_np_dtype

from gateway.compare import Comparison, compare_responses
from gateway.config import ShadowConfig
from gateway.errors import GatewayError
from gateway.retarget import retarget
from gateway.shadow_stats import ShadowCounters, ShadowStats
from gateway.signatures import SignatureCache
from gateway.telemetry import Telemetry
from gateway.upstream import Pool
from gateway.validate import validate_infer_request
from router import Variant

if TYPE_CHECKING:
    from gateway.dataplane import Prepared

__all__ = ["DiscrepancyLog", "ShadowRunner"]

log = logging.getLogger(__name__)


def _tensors(response: bytes) -> dict[str, object]:
    decoded = service_pb2.ModelInferResponse.FromString(response)
    tensors: dict[str, object] = {}
    for tensor, raw in zip(decoded.outputs, decoded.raw_output_contents, strict=False):
        if tensor.datatype == "BYTES":
            tensors[tensor.name] = raw.hex()
        else:
            array = np.frombuffer(raw, dtype=triton_to_np_dtype(tensor.datatype)).reshape(list(tensor.shape))
            tensors[tensor.name] = array.tolist()
    return tensors


class DiscrepancyLog:
    """JSON lines, one per sampled comparison that was not byte-identical; size-bounded by rotation."""

    def __init__(self, config: ShadowConfig, draw: Callable[[], float] = random.random) -> None:
        assert config.log_path is not None
        self._config = config
        self._draw = draw
        self._handler = RotatingFileHandler(config.log_path, maxBytes=config.log_max_bytes, backupCount=1)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger = logging.Logger(f"gateway.discrepancies.{config.log_path}")
        self._logger.addHandler(self._handler)

    def record(
        self,
        request_id: str,
        model: str,
        primary: str,
        shadow: str,
        comparison: Comparison,
        responses: tuple[bytes, bytes],
    ) -> None:
        if comparison.exact or self._draw() >= self._config.log_sample:
            return
        entry: dict[str, object] = {
            "time": time.time(),
            "request_id": request_id,
            "model": model,
            "primary": primary,
            "shadow": shadow,
            "argmax_disagrees": comparison.argmax_disagrees,
            "max_abs_error": comparison.max_abs_error,
            "tensors": {
                t.name: {"exact": t.exact, "max_abs_error": t.max_abs_error, "max_rel_error": t.max_rel_error,
                         "argmax_agreement": t.argmax_agreement, **({"note": t.note} if t.note else {})}
                for t in comparison.tensors
            },
        }  # fmt: skip
        if self._config.log_tensors:
            entry["primary_outputs"], entry["shadow_outputs"] = (_tensors(r) for r in responses)
        self._logger.info(json.dumps(entry))

    def close(self) -> None:
        self._handler.close()


class ShadowRunner:
    def __init__(
        self,
        pools: Mapping[str, Pool],
        signatures: SignatureCache,
        stats: ShadowStats,
        config: ShadowConfig,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._pools = pools
        self._signatures = signatures
        self.stats = stats
        self._timeout_s = config.timeout_s
        self._log = DiscrepancyLog(config) if config.log_path else None
        self._inflight: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, prepared: Prepared, primary_response: bytes) -> None:
        model, primary = prepared.route.model, prepared.decision.primary.name
        link = trace.get_current_span().get_span_context()
        for variant, policy in prepared.decision.shadows:
            counters = self.stats.counters(model, primary, variant.name)
            key = (model, variant.name)
            if self._inflight.get(key, 0) >= policy.max_inflight:
                counters.dropped += 1
                continue
            self._inflight[key] = self._inflight.get(key, 0) + 1
            counters.sent += 1
            task = asyncio.create_task(self._traced(link, prepared, variant, primary_response, counters))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight[key] -= 1

    async def _traced(
        self, link: trace.SpanContext, prepared: Prepared, variant: Variant, primary: bytes, counters: ShadowCounters
    ) -> None:
        """The copy in a trace of its own, linked to the primary's: it never stretches that trace."""
        if self._telemetry is None:
            await self._shadow(prepared, variant, primary, counters)
            return
        with self._telemetry.shadow_scope(link, prepared.route.model, variant.name):
            await self._shadow(prepared, variant, primary, counters)

    async def _shadow(
        self, prepared: Prepared, variant: Variant, primary_response: bytes, counters: ShadowCounters
    ) -> None:
        request = prepared.request
        try:
            signature = await self._signatures.get(variant, self._timeout_s)
            validate_infer_request(request, signature, prepared.tensors)
            payload = retarget(request, variant, prepared.tensors)
            response = await self._pools[variant.pool].call("ModelInfer", payload, self._timeout_s)
        except GatewayError as exc:
            counters.failed += 1
            log.debug("shadow %s/%s failed: %s", prepared.route.model, variant.name, exc.message)
            return
        comparison = compare_responses(primary_response, response)
        counters.record(comparison)
        if self._log is not None:
            request_id = request.id or uuid.uuid4().hex
            primary = prepared.decision.primary.name
            self._log.record(
                request_id, prepared.route.model, primary, variant.name, comparison, (primary_response, response)
            )

    async def close(self, timeout_s: float) -> None:
        """Let copies under way finish within `timeout_s`, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*pending, return_exceptions=True)
        if self._log is not None:
            self._log.close()
