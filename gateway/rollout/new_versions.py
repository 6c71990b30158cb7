"""`rollouts.on_new_version`: a rollout started by itself when a pool's repository holds a newer
version of a routed model than any of the route's variants (a pipeline published one).

`new_versions` (pure) finds them: for each route whose variants pin numeric versions, the
baseline (the variant with the most weight) and the newest READY version in its pool's index,
when that version is newer than every variant's. `NewVersionWatcher` polls the index, adds the
version to the route as a variant of its own (`v<N>`, weight 0), and starts a rollout of it
against the baseline with the configured spec; a version already in the route is never started
again (a rolled-back candidate stays as a variant at weight 0), so it runs once per version."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.audit import acting_as
from gateway.errors import GatewayError
from gateway.rollout.controller import RolloutController
from gateway.rollout.spec import RolloutSpec
from gateway.routes import Route, RouteStore, Variant

__all__ = ["ACTOR", "NewVersion", "NewVersionWatcher", "new_versions"]

log = logging.getLogger(__name__)

ACTOR = "on_new_version"  # who the audit trail says started the rollout


@dataclass(frozen=True, slots=True)
class NewVersion:
    model: str  # the route's (public) name
    variant: Variant  # the new version's, weight 0
    baseline: str


def _number(version: str) -> int | None:
    return int(version) if version.isdigit() else None


def new_versions(routes: Mapping[str, Route], indexes: list[dict[str, Any]],
                 models: Collection[str] = ()) -> list[NewVersion]:  # fmt: skip
    """The routes (of `models`, or all) with a newer READY version in their baseline's pool."""
    ready: dict[tuple[str, str], set[int]] = {}
    for index in indexes:
        for entry in index.get("models", []):
            number = _number(str(entry.get("version", "")))
            if number is not None and str(entry.get("state", "")).upper() == "READY":
                ready.setdefault((index["pool"], entry["name"]), set()).add(number)
    found = []
    for name, route in sorted(routes.items()):
        if models and name not in models:
            continue
        numbers = [_number(v.version) for v in route.variants]
        if not route.variants or any(n is None for n in numbers):
            continue  # unpinned ("latest") variants: Triton itself would serve a new version
        baseline = max(route.variants, key=lambda v: v.weight)
        newest = max(ready.get((baseline.pool, baseline.model), set()), default=None)
        if newest is None or newest <= max(n for n in numbers if n is not None):
            continue
        variant = Variant(name=f"v{newest}", pool=baseline.pool, model=baseline.model, version=str(newest), weight=0)
        if any(v.name == variant.name for v in route.variants):
            continue
        found.append(NewVersion(name, variant, baseline.name))
    return found


class NewVersionWatcher:
    """Polls the pools' indexes every `poll_s`; each new version becomes a variant and a rollout."""

    def __init__(self, store: RouteStore, controller: RolloutController, index: Callable[[], str],
                 spec: Mapping[str, Any], models: Collection[str] = (), poll_s: float = 10.0) -> None:  # fmt: skip
        self._store, self._controller, self._index = store, controller, index
        self._spec, self._models, self._poll_s = dict(spec), tuple(models), poll_s
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.look()
            except (GatewayError, ValueError, OSError) as exc:  # reported; the next look tries again
                log.warning("looking for new model versions failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_s)

    def stop(self) -> None:
        self._stopping.set()

    async def look(self) -> list[str]:
        """One look: the rollouts started (their models)."""
        indexes = json.loads(await asyncio.to_thread(self._index))
        for index in indexes:
            if "error" in index:
                log.warning("pool %s's repository index: %s", index["pool"], index["error"])
        started = []
        for found in new_versions(self._store.snapshot(), indexes, self._models):
            if not self._controller.leading:
                break  # the leader starts it; the others would only be told to wait
            if self._controller.owner(found.model) is not None:
                continue  # a rollout of the model is under way or paused: looked at again later
            with acting_as(ACTOR, f"version {found.variant.version} of {found.variant.model} appeared in pool "
                                  f"{found.variant.pool}"):  # fmt: skip
                route = self._store.require(found.model)
                self._store.set_route(dataclasses.replace(route, variants=(*route.variants, found.variant)))
                spec = RolloutSpec.model_validate(self._spec | {"model": found.model, "candidate": found.variant.name,
                                                                "baseline": found.baseline})  # fmt: skip
                await self._controller.submit("start", found.model, ACTOR, spec,
                                              reason=f"version {found.variant.version} appeared")  # fmt: skip
            started.append(found.model)
            log.info("started a rollout of %s version %s (on_new_version)", found.model, found.variant.version)
        return started
