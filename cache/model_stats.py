"""The gateway's cache hits, folded into Triton's ModelStatistics as Triton's own response cache
would report them (pure).

A request answered from the gateway's cache never reaches Triton, so Triton's statistics do not
see it; clients that read them (perf_analyzer finds the model version it measured by the queue
count that grew) would see a model doing nothing. Triton's own cache counts a hit as a successful
inference that passed its queue and hit the cache, without an execution: so do these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HitCounter", "ModelHits", "fold_hits"]


@dataclass
class HitCounter:
    requests: int = 0
    inferences: int = 0  # rows: Triton counts each row of a batched request as an inference
    ns: int = 0  # time spent answering them


class ModelHits:
    """Cache hits per upstream (model, version); version "" when the route let Triton choose."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], HitCounter] = {}

    def record(self, model: str, version: str, rows: int, ns: int) -> None:
        counter = self._hits.setdefault((model, version), HitCounter())
        counter.requests += 1
        counter.inferences += rows
        counter.ns += ns

    def snapshot(self) -> dict[tuple[str, str], HitCounter]:
        return dict(self._hits)


def _version_number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def fold_hits(response: Any, hits: Mapping[tuple[str, str], HitCounter]) -> bool:
    """Add the hits to the matching entries of a ModelStatisticsResponse; True if any changed.
    Hits without a version go to the highest version listed for their model."""
    entries = {(entry.name, entry.version): entry for entry in response.model_stats}
    latest: dict[str, Any] = {}
    for entry in response.model_stats:
        if entry.name not in latest or _version_number(entry.version) > _version_number(latest[entry.name].version):
            latest[entry.name] = entry
    changed = False
    for (model, version), counter in hits.items():
        entry = entries.get((model, version)) if version else latest.get(model)
        if entry is None or not counter.requests:
            continue
        stats = entry.inference_stats
        entry.inference_count += counter.inferences
        stats.success.count += counter.requests
        stats.success.ns += counter.ns
        stats.queue.count += counter.requests  # passed the queue with no wait, as in Triton
        stats.cache_hit.count += counter.requests
        stats.cache_hit.ns += counter.ns
        changed = True
    return changed
