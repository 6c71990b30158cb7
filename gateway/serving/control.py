"""The control loop around the core: the audit trail (every route change the RouteStore
makes, whoever makes it) and the rollout controller, assembled once and run on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from gateway.admin.convert import route_to_proto
from gateway.audit import AuditTrail, current_actor
from gateway.config.schema import GatewayConfig
from gateway.rollout.controller import Quality, RolloutController, Totals
from gateway.rollout.new_versions import NewVersionWatcher
from gateway.rollout.persistence import FileStates, RedisStates, RolloutStates
from gateway.rollout.shadow_stats import ShadowStats
from gateway.routes import Route, RouteEvent, RouteStore

__all__ = ["ControlLoop"]

# Who made a change nobody claimed (no admin token, no controller): by the kind of change.
_ACTORS = {"reload": "config", "discovered": "discovery"}


def _route(route: Route | None) -> dict[str, Any] | None:
    if route is None:
        return None
    proto = route_to_proto(route)  # weights of 0 included: they matter
    return MessageToDict(proto, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


class ControlLoop:
    def __init__(
        self, config: GatewayConfig, store: RouteStore, totals: Totals, shadows: ShadowStats,
        quality: Quality | None = None, index: Callable[[], str] | None = None,
    ) -> None:  # fmt: skip
        shared = config.shared
        self.audit = AuditTrail(config.audit.path, shared.redis_url, shared.namespace, config.audit.memory_records)
        self.states: RolloutStates = (
            RedisStates(shared.redis_url, shared.namespace, config.rollouts.lease_s)
            if shared.redis_url
            else FileStates(config.rollouts.state_file)
        )
        self.rollouts = RolloutController(
            store, totals, shadows, self.audit, self.states, config.rollouts.tick_s, quality=quality
        )
        self._unsubscribe = store.subscribe(self._on_route_change)
        self._task: asyncio.Task[None] | None = None
        watch = config.rollouts.on_new_version
        # `index`: the pools' repository indexes (the core's), when new versions are watched for.
        self.new_versions = (
            NewVersionWatcher(store, self.rollouts, index, watch.spec, watch.models, watch.poll_s)
            if watch is not None and index is not None
            else None
        )
        self._watching: asyncio.Task[None] | None = None

    def _on_route_change(self, event: RouteEvent) -> None:
        if event.kind == "remote":  # another replica's change: it recorded it
            return
        actor, reason = current_actor()
        self.audit.record(f"route.{event.kind}", event.model, before=_route(event.previous), after=_route(event.route),
                          reason=reason, actor=actor or _ACTORS.get(event.kind, "gateway"))  # fmt: skip

    async def start(self) -> None:
        self._task = asyncio.create_task(self.rollouts.run())
        if self.new_versions is not None:
            self._watching = asyncio.create_task(self.new_versions.run())

    async def stop(self) -> None:
        self._unsubscribe()
        if self.new_versions is not None and self._watching is not None:
            self.new_versions.stop()
            await asyncio.wait([self._watching], timeout=5.0)
        self.rollouts.stop()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=3.0)  # the round under way finishes
            if not done:
                self._task.cancel()
                await asyncio.wait([self._task], timeout=2.0)
        await self.states.close()
        await self.audit.close()
