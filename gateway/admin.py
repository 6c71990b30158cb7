"""The admin API (proto/gateway_admin/admin.proto) on its own port, behind a bearer token.

Each RPC is a thin call into the RouteStore; RouteError → INVALID_ARGUMENT, an unknown model →
NOT_FOUND. Authentication is the only interceptor: no business logic lives there.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cache import RedisUnavailable
from gateway.admin_convert import (
    cache_stats_to_proto,
    event_to_proto,
    pool_stats_to_proto,
    route_from_proto,
    route_to_proto,
    shadow_from_proto,
    stats_to_proto,
)
from gateway.caching import InferenceCache
from gateway.dataplane import DataPlane
from gateway.errors import GatewayError
from gateway.shadow_stats import ShadowStats
from gateway_admin import admin_pb2 as pb
from gateway_admin import admin_pb2_grpc
from router import Route, RouteError, RouteEvent, UnknownRoute

__all__ = ["AdminServicer", "BearerTokenInterceptor"]

log = logging.getLogger(__name__)
R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


def _statuses(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map the control plane's expected errors to gRPC statuses at this one boundary."""

    @functools.wraps(method)
    async def wrapper(self: AdminServicer, request: Any, context: Context) -> R:
        try:
            return await method(self, request, context)
        except RouteError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except UnknownRoute as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except GatewayError as exc:
            await context.abort(exc.code, exc.message)
        raise AssertionError("unreachable: abort raises")

    return wrapper


class AdminServicer(admin_pb2_grpc.GatewayAdminServicer):  # type: ignore[misc]  # generated base is untyped
    def __init__(
        self,
        dataplane: DataPlane,
        stats: ShadowStats,
        cache: InferenceCache,
        pool_stats: Callable[[], list[pb.PoolStats]] | None = None,
    ) -> None:
        """`pool_stats`: where the pools' numbers come from when another engine holds the pools."""
        self._pool_stats = pool_stats
        self._dataplane = dataplane
        self._store = dataplane.store
        self._stats = stats
        self._cache = cache

    async def _route(self, model: str) -> Route:
        """The model's route; a model without one gets its zero-config route, as a request would."""
        return await self._dataplane.route(model, timeout=10.0)

    def _answer(self, route: Route) -> pb.RouteResponse:
        return pb.RouteResponse(route=route_to_proto(route), revision=self._store.revision)

    @_statuses
    async def GetRoutes(self, request: pb.GetRoutesRequest, context: Context) -> pb.GetRoutesResponse:
        routes = [await self._route(request.model)] if request.model else list(self._store.snapshot().values())
        return pb.GetRoutesResponse(routes=[route_to_proto(r) for r in routes], revision=self._store.revision)

    @_statuses
    async def SetRoute(self, request: pb.SetRouteRequest, context: Context) -> pb.RouteResponse:
        if not request.route.model:
            raise RouteError("routes: the route names no model")
        return self._answer(self._store.set_route(route_from_proto(request.route)))

    @_statuses
    async def SetWeights(self, request: pb.SetWeightsRequest, context: Context) -> pb.RouteResponse:
        await self._route(request.model)
        return self._answer(self._store.set_weights(request.model, dict(request.weights)))

    @_statuses
    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.RouteResponse:
        await self._route(request.model)
        return self._answer(self._store.promote(request.model, request.variant))

    @_statuses
    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RouteResponse:
        return self._answer(self._store.rollback(request.model))

    @_statuses
    async def SetShadow(self, request: pb.SetShadowRequest, context: Context) -> pb.RouteResponse:
        await self._route(request.model)
        return self._answer(self._store.set_shadow(request.model, shadow_from_proto(request.shadow)))

    @_statuses
    async def GetShadowStats(self, request: pb.GetShadowStatsRequest, context: Context) -> pb.GetShadowStatsResponse:
        snapshot = self._stats.snapshot(request.model)
        return pb.GetShadowStatsResponse(stats=[stats_to_proto(*key, counters) for key, counters in snapshot.items()])

    @_statuses
    async def GetCacheStats(self, request: pb.GetCacheStatsRequest, context: Context) -> pb.CacheStats:
        return cache_stats_to_proto(self._cache)

    @_statuses
    async def GetPoolStats(self, request: pb.GetPoolStatsRequest, context: Context) -> pb.GetPoolStatsResponse:
        if self._pool_stats is not None:
            return pb.GetPoolStatsResponse(pools=self._pool_stats())
        now = time.monotonic()
        admissions = self._dataplane.admissions
        pools = [pool_stats_to_proto(pool, admissions.get(name), now) for name, pool in self._dataplane.pools.items()]
        return pb.GetPoolStatsResponse(pools=pools)

    @_statuses
    async def InvalidateCache(self, request: pb.InvalidateCacheRequest, context: Context) -> pb.InvalidateCacheResponse:
        if not request.model and not request.all:
            raise RouteError("invalidate: name a model, or flush everything with all=true")
        if request.variant and not request.model:
            raise RouteError("invalidate: a variant needs its model")
        try:
            removed = await self._cache.tiers.invalidate(request.model, request.variant)
        except RedisUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"in-process entries dropped, but {exc}")
        return pb.InvalidateCacheResponse(removed=removed)

    async def WatchEvents(self, request: pb.WatchEventsRequest, context: Context) -> AsyncIterator[pb.RouteEvent]:
        events: asyncio.Queue[RouteEvent] = asyncio.Queue(maxsize=10_000)

        def deliver(event: RouteEvent) -> None:
            if not request.model or event.model == request.model:
                events.put_nowait(event)  # a watcher 10,000 events behind is broken: QueueFull ends it

        unsubscribe = self._store.subscribe(deliver)
        try:
            while True:
                yield event_to_proto(await events.get())
        finally:
            unsubscribe()


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every admin RPC needs `authorization: Bearer <token>`; anything else is UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        presented = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(presented).encode(), self._expected):
            return handler
        reason = "missing bearer token" if not presented else "wrong bearer token"

        async def refuse(request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"admin API: {reason} (authorization metadata)")

        if handler is not None and handler.response_streaming:

            async def refuse_stream(request: Any, context: Context) -> AsyncIterator[None]:
                await refuse(request, context)
                yield None

            return grpc.unary_stream_rpc_method_handler(refuse_stream)
        return grpc.unary_unary_rpc_method_handler(refuse)
