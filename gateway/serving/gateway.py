"""The gateway: the native core serves the data port on its own threads; this object runs the
control plane around it on the asyncio loop.

Route changes (admin API, config reload, Redis sync) land in the RouteStore, and every change
hands the core the whole table, which it swaps atomically. Routes the core discovers for models
with no route come back through its event queue into the store, so the admin API sees them; a
model an operator names before any request did is looked up through the core the same way. No
request of the data port goes through Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from gateway._core import Core
from gateway.admin.convert import streams_to_proto
from gateway.admin.service import AdminServicer, admin_server, listen
from gateway.config.boundary import core_config, reflection_descriptors, routes_to_core
from gateway.config.policies import affinity_for_core, batching_for_core, policies_for_core
from gateway.config.reload import ConfigReloader, ConfigSource
from gateway.config.schema import GatewayConfig
from gateway.config.tls import server_credentials
from gateway.drift.loop import Drift
from gateway.drift.metrics import DriftCollector
from gateway.errors import UpstreamError
from gateway.feedback.loop import Feedback
from gateway.feedback.metrics import FeedbackCollector
from gateway.rollout.metrics import RolloutCollector
from gateway.rollout.shadow_stats import Key, ShadowCounters
from gateway.rollout.totals import VariantTotals, totals_from_core
from gateway.routes import Route, RouteError, RouteStore, route_from_core
from gateway.routes.sync import RouteSync
from gateway.serving.cache_admin import CoreCache
from gateway.serving.control import ControlLoop
from gateway.serving.metrics import CoreCollector
from gateway.serving.metrics_server import MetricsServer
from gateway.serving.observations import ObservationReader
from gateway_admin import admin_pb2 as pb

__all__ = ["CoreShadowStats", "Gateway"]

log = logging.getLogger(__name__)

_LOOKUP_TIMEOUT_S = 10.0  # a model an admin call names: its zero-config discovery
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _queue_share(share: dict[str, Any]) -> pb.QueueShare:
    """A tenant's or a priority class's part of a pool's queue, from the core's statistics."""
    return pb.QueueShare(**{key: value for key, value in share.items() if key != "queue_wait"})


class CoreShadowStats:
    """The core's shadow counters, read when asked (admin API, metrics, rollout gates)."""

    def __init__(self, core: Core) -> None:
        self._core = core

    def snapshot(self, model: str = "") -> dict[Key, ShadowCounters]:
        rows = json.loads(self._core.shadow_stats(model))
        return {(r["model"], r["primary"], r["variant"]): ShadowCounters.from_dict(r["counters"]) for r in rows}


class Gateway:
    def __init__(self, config: GatewayConfig, source: ConfigSource | None = None) -> None:
        self.config = config
        self.store = RouteStore(config.pools, history=config.route_history)
        self.store.replace([route.to_route(model) for model, route in config.routes.items()], kind="set")
        self.feedback = Feedback(config) if config.feedback.enabled else None
        observed = config.feedback.enabled or config.drift.enabled
        handed = core_config(config, observations=config.feedback.queue if observed else 0,
                             observation_tensors=config.drift.sample if config.drift.enabled else 0.0)  # fmt: skip
        self.core = Core(json.dumps(handed), *reflection_descriptors())
        self._push()
        self.store.subscribe(lambda _event: self._push())
        self.reloader = (
            ConfigReloader(
                source,
                config,
                self.store,
                on_reload=self._reloaded,
                owner=lambda model: self.loop.rollouts.owner(model),
            )
            if source
            else None
        )
        self.shadow_stats = CoreShadowStats(self.core)
        quality = self.feedback.totals if self.feedback else None
        self.loop = ControlLoop(config, self.store, self._variant_totals, self.shadow_stats, quality,
                                index=lambda: self.core.repository_index(5.0))  # fmt: skip
        self.drift = Drift(config, self._main_variant, self.loop.audit) if config.drift.enabled else None
        sinks = [sink.consume for sink in (self.feedback, self.drift) if sink is not None]
        self.observations = ObservationReader(self.core.next_observations, sinks) if sinks else None
        servicer = AdminServicer(
            self.store, self._route_of, self.shadow_stats, CoreCache(self.core), self._pool_stats, control=self.loop,
            feedback=self.feedback, drift=self.drift,
            stream_stats=lambda model: streams_to_proto(json.loads(self.core.stats())["series"]["streams"], model),
        )  # fmt: skip
        self.admin_server = admin_server(config, servicer) if config.admin else None
        shared = config.shared
        self.route_sync = RouteSync(self.store, shared.redis_url, shared.namespace) if shared.redis_url else None
        telemetry = config.telemetry
        self.metrics_server: MetricsServer | None = None
        if telemetry.metrics_port is not None:
            registry = CollectorRegistry()
            registry.register(CoreCollector(self.core.stats, self.shadow_stats))
            registry.register(RolloutCollector(self.loop.rollouts))
            if self.feedback is not None:
                registry.register(FeedbackCollector(self.feedback))
            if self.drift is not None:
                registry.register(DriftCollector(self.drift))
            self.metrics_server = MetricsServer(registry, telemetry.metrics_host, telemetry.metrics_port)
        self.metrics_port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def _reloaded(self, config: GatewayConfig) -> None:
        self.core.set_cache_policies(json.dumps(policies_for_core(config)))
        self.core.set_batching_policies(json.dumps(batching_for_core(config)))
        self.core.set_affinity_policies(json.dumps(affinity_for_core(config)))
        self._push()

    def _push(self) -> None:
        """The whole table to the core; the next request sees it."""
        self.core.set_routes(routes_to_core(self.store.snapshot().values()))

    def _main_variant(self, model: str) -> str | None:
        """The variant with the most weight: its first samples become the drift reference."""
        route = self.store.get(model)
        return max(route.variants, key=lambda v: v.weight).name if route and route.variants else None

    def _variant_totals(self) -> dict[tuple[str, str], VariantTotals]:
        return totals_from_core(json.loads(self.core.stats()))

    async def _route_of(self, model: str) -> Route:
        """The route a request for `model` would take; a zero-config one the core discovers lands
        in the store at once (its event arrives later and finds it there)."""
        if (known := self.store.get(model)) is not None:
            return known
        found = json.loads(await asyncio.to_thread(self.core.route, model, _LOOKUP_TIMEOUT_S))
        if "route" not in found:
            raise UpstreamError(_STATUS_CODES.get(found["code"], grpc.StatusCode.UNKNOWN), found["message"])
        return self.store.discovered(route_from_core(found["route"]))

    def _pool_stats(self) -> list[pb.PoolStats]:
        pools = json.loads(self.core.stats())["pools"]
        nested = ("queue_wait", "endpoints", "names", "tenants", "classes")
        return [
            pb.PoolStats(
                **{key: value for key, value in pool.items() if key not in nested},
                endpoints=[pb.EndpointStats(**e) for e in pool["endpoints"]],
                names=[pb.DnsNameStats(**n) for n in pool["names"]],
                tenants=[_queue_share(share) for share in pool.get("tenants", [])],
                classes=[_queue_share(share) for share in pool.get("classes", [])],
            )
            for pool in pools
        ]

    async def _pull_events(self) -> None:
        """Events from the core's bounded queue, in batches, on a thread that waits without the GIL."""
        while not self._stopping:
            events = await asyncio.to_thread(self.core.next_events, 256, 0.5)
            for text in events:
                try:
                    event = json.loads(text)
                    if event.get("kind") == "discovered":
                        self.store.discovered(route_from_core(event["route"]))
                except (RouteError, ValueError, KeyError, TypeError) as exc:  # one bad event, not the loop
                    log.warning("event from the core not applied (%s): %s", exc, text[:200])

    async def start(self) -> tuple[int, int | None]:
        if self.metrics_server is not None:
            self.metrics_port = await self.metrics_server.start()
        admin_port = None
        if self.admin_server is not None and self.config.admin is not None:
            credentials = server_credentials(self.config.tls) if self.config.tls else None
            admin_port = listen(self.admin_server, self.config.admin.listen, credentials)
            await self.admin_server.start()
        port = await asyncio.to_thread(self.core.start)
        self._tasks.append(asyncio.create_task(self._pull_events()))
        if self.route_sync is not None:
            await self.route_sync.load()
            self._tasks.append(asyncio.create_task(self.route_sync.run()))
        if self.reloader is not None:
            self._tasks.append(asyncio.create_task(self.reloader.watch()))
        await self.loop.start()
        if self.observations is not None:
            self.observations.start()
        return port, admin_port

    async def stop(self) -> None:
        self.core.drain()
        if self.config.drain_delay_s:
            await asyncio.sleep(self.config.drain_delay_s)
        self._stopping = True
        await asyncio.to_thread(self.core.stop, self.config.grace_period_s)
        if self.admin_server is not None:
            await self.admin_server.stop(0)
        await self.loop.stop()
        if self.observations is not None:
            await self.observations.stop()
        for sink in (self.feedback, self.drift):
            if sink is not None:
                await sink.close()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.route_sync is not None:
            await self.route_sync.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
