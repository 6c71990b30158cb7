"""The admin API (proto/gateway_admin/admin.proto) on its own port, behind bearer tokens.

Each RPC is a thin call into the RouteStore, the rollout controller or the audit trail;
RouteError → INVALID_ARGUMENT, an unknown model → NOT_FOUND. Authentication is the only
interceptor: no business logic lives there. Every change runs as the token's name, which the
audit trail records as its actor.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import io
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from grpc_reflection.v1alpha import reflection

from gateway.admin.convert import (
    cache_stats_to_proto,
    event_to_proto,
    route_from_proto,
    route_to_proto,
    shadow_from_proto,
    stats_to_proto,
)
from gateway.audit import acting_as, verify
from gateway.config.schema import ConfigError, GatewayConfig
from gateway.drift.loop import Drift
from gateway.drift.messages import drift_to_proto
from gateway.errors import GatewayError, InvalidRequest, NotSupported
from gateway.feedback.loop import Feedback
from gateway.feedback.messages import outcome_from_proto, outcomes_to_proto
from gateway.rollout.messages import audit_to_proto, spec_from_proto, status_to_proto
from gateway.rollout.shadow_stats import ShadowStats
from gateway.routes import Route, RouteError, RouteEvent, RouteStore, UnknownRoute
from gateway.serving.cache_admin import CacheAdmin, RedisUnavailable
from gateway.serving.control import ControlLoop
from gateway_admin import admin_pb2 as pb
from gateway_admin import admin_pb2_grpc

__all__ = ["ADMIN_TOKEN_ENV", "AdminServicer", "BearerTokenInterceptor", "admin_server", "listen", "token_names"]

log = logging.getLogger(__name__)
ADMIN_TOKEN_ENV = "GATEWAY_ADMIN_TOKEN"
R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


def _statuses(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Map the control plane's expected errors to gRPC statuses at this one boundary."""

    @functools.wraps(method)
    async def wrapper(self: AdminServicer, request: Any, context: Context) -> R:
        try:
            with acting_as(self.actor(context)):
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
        store: RouteStore,
        route_of: Callable[[str], Awaitable[Route]],
        stats: ShadowStats,
        cache: CacheAdmin,
        pool_stats: Callable[[], list[pb.PoolStats]],
        control: ControlLoop | None = None,
        stream_stats: Callable[[str], list[pb.StreamStats]] | None = None,
        feedback: Feedback | None = None,
        drift: Drift | None = None,
    ) -> None:
        """`route_of`: a model's route as a request would find it (a zero-config one discovered);
        `pool_stats`: the pools' numbers, from the core; `control`: the audit trail and rollouts
        (none: those RPCs answer UNIMPLEMENTED)."""
        self._pool_stats = pool_stats
        self._stream_stats = stream_stats
        self._control = control
        self._feedback = feedback
        self._drift = drift
        self.actors: dict[str, str] = {}  # `authorization` value -> token name (set by admin_server)
        self._route_of = route_of
        self._store = store
        self._stats = stats
        self._cache = cache

    def actor(self, context: Context) -> str:
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        return self.actors.get(str(presented), "admin")

    def _loop(self) -> ControlLoop:
        if self._control is None:
            raise NotSupported("rollouts and the audit trail are not running in this gateway")
        return self._control

    def _answer(self, route: Route) -> pb.RouteResponse:
        return pb.RouteResponse(route=route_to_proto(route), revision=self._store.revision)

    @_statuses
    async def GetRoutes(self, request: pb.GetRoutesRequest, context: Context) -> pb.GetRoutesResponse:
        routes = [await self._route_of(request.model)] if request.model else list(self._store.snapshot().values())
        return pb.GetRoutesResponse(routes=[route_to_proto(r) for r in routes], revision=self._store.revision)

    @_statuses
    async def SetRoute(self, request: pb.SetRouteRequest, context: Context) -> pb.RouteResponse:
        if not request.route.model:
            raise RouteError("routes: the route names no model")
        return self._answer(self._store.set_route(route_from_proto(request.route)))

    @_statuses
    async def SetWeights(self, request: pb.SetWeightsRequest, context: Context) -> pb.RouteResponse:
        await self._route_of(request.model)
        return self._answer(self._store.set_weights(request.model, dict(request.weights)))

    @_statuses
    async def Promote(self, request: pb.PromoteRequest, context: Context) -> pb.RouteResponse:
        await self._route_of(request.model)
        return self._answer(self._store.promote(request.model, request.variant))

    @_statuses
    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RouteResponse:
        return self._answer(self._store.rollback(request.model))

    @_statuses
    async def SetShadow(self, request: pb.SetShadowRequest, context: Context) -> pb.RouteResponse:
        await self._route_of(request.model)
        return self._answer(self._store.set_shadow(request.model, shadow_from_proto(request.shadow)))

    @_statuses
    async def GetShadowStats(self, request: pb.GetShadowStatsRequest, context: Context) -> pb.GetShadowStatsResponse:
        snapshot = self._stats.snapshot(request.model)
        return pb.GetShadowStatsResponse(stats=[stats_to_proto(*key, counters) for key, counters in snapshot.items()])

    @_statuses
    async def GetCacheStats(self, request: pb.GetCacheStatsRequest, context: Context) -> pb.CacheStats:
        return cache_stats_to_proto(self._cache.snapshot())

    @_statuses
    async def GetPoolStats(self, request: pb.GetPoolStatsRequest, context: Context) -> pb.GetPoolStatsResponse:
        return pb.GetPoolStatsResponse(pools=self._pool_stats())

    @_statuses
    async def GetStreamStats(self, request: pb.GetStreamStatsRequest, context: Context) -> pb.GetStreamStatsResponse:
        if self._stream_stats is None:
            raise NotSupported("stream statistics are not kept here")
        return pb.GetStreamStatsResponse(stats=self._stream_stats(request.model))

    @_statuses
    async def InvalidateCache(self, request: pb.InvalidateCacheRequest, context: Context) -> pb.InvalidateCacheResponse:
        if not request.model and not request.all:
            raise RouteError("invalidate: name a model, or flush everything (the request's `all`; gatewayctl "
                             "invalidate --all)")  # fmt: skip
        if request.variant and not request.model:
            raise RouteError("invalidate: a variant needs its model")
        try:
            removed = await self._cache.invalidate(request.model, request.variant)
        except RedisUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"in-process entries dropped, but {exc}")
        if self._control is not None:
            what = {"variant": request.variant, "all": request.all, "removed": removed}
            self._control.audit.record("cache.invalidate", request.model or "*", after=what)
        return pb.InvalidateCacheResponse(removed=removed)

    def _status(self, state: Any) -> pb.RolloutStatus:
        return status_to_proto(state, self._loop().rollouts.leading)

    @_statuses
    async def StartRollout(self, request: pb.StartRolloutRequest, context: Context) -> pb.RolloutStatus:
        rollouts = self._loop().rollouts
        if not request.spec.model or not request.spec.candidate:
            raise RouteError("rollout: name the model and the candidate variant")
        spec = spec_from_proto(request.spec, await self._route_of(request.spec.model))
        return self._status(await rollouts.submit("start", spec.model, self.actor(context), spec))

    async def _command(self, verb: str, request: pb.RolloutCommandRequest, context: Context) -> pb.RolloutStatus:
        rollouts = self._loop().rollouts
        return self._status(await rollouts.submit(verb, request.model, self.actor(context), reason=request.reason))

    @_statuses
    async def PauseRollout(self, request: pb.RolloutCommandRequest, context: Context) -> pb.RolloutStatus:
        return await self._command("pause", request, context)

    @_statuses
    async def ResumeRollout(self, request: pb.RolloutCommandRequest, context: Context) -> pb.RolloutStatus:
        return await self._command("resume", request, context)

    @_statuses
    async def AbortRollout(self, request: pb.RolloutCommandRequest, context: Context) -> pb.RolloutStatus:
        return await self._command("abort", request, context)

    @_statuses
    async def PromoteRollout(self, request: pb.RolloutCommandRequest, context: Context) -> pb.RolloutStatus:
        return await self._command("promote", request, context)

    @_statuses
    async def GetRollout(self, request: pb.GetRolloutRequest, context: Context) -> pb.RolloutStatus:
        rollouts = self._loop().rollouts
        await rollouts.refresh()
        return self._status(rollouts.get(request.model))

    @_statuses
    async def ListRollouts(self, request: pb.ListRolloutsRequest, context: Context) -> pb.ListRolloutsResponse:
        rollouts = self._loop().rollouts
        await rollouts.refresh()
        return pb.ListRolloutsResponse(rollouts=[self._status(s) for s in rollouts.list()])

    def _outcomes(self) -> Feedback:
        if self._feedback is None:
            raise NotSupported("outcomes are not joined here: set feedback.enabled")
        return self._feedback

    @_statuses
    async def ReportOutcomes(self, request: pb.ReportOutcomesRequest, context: Context) -> pb.ReportOutcomesResponse:
        feedback = self._outcomes()
        outcomes = [outcome_from_proto(o, index) for index, o in enumerate(request.outcomes)]
        reported = await feedback.report(outcomes)
        return pb.ReportOutcomesResponse(accepted=reported.accepted, unmatched=reported.unmatched,
                                         late=reported.late, duplicate=reported.duplicate)  # fmt: skip

    @_statuses
    async def GetOutcomes(self, request: pb.GetOutcomesRequest, context: Context) -> pb.GetOutcomesResponse:
        feedback = self._outcomes()
        await feedback.store.refresh()
        return outcomes_to_proto(request.model, feedback.totals(), feedback.store.unmatched)

    def _drifts(self) -> Drift:
        if self._drift is None:
            raise NotSupported("drift is not computed here: set drift.enabled")
        return self._drift

    @_statuses
    async def GetDrift(self, request: pb.GetDriftRequest, context: Context) -> pb.GetDriftResponse:
        drift = self._drifts()
        await drift.refresh()
        return drift_to_proto(drift, request.model)

    @_statuses
    async def SetDriftReference(self, request: pb.SetDriftReferenceRequest, context: Context) -> pb.GetDriftResponse:
        drift = self._drifts()
        if not request.model:
            raise RouteError("drift reference: name the model")
        try:
            with np.load(io.BytesIO(request.npz), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            reference = await drift.upload_reference(request.model, arrays)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidRequest(f"drift reference for {request.model}: not a usable .npz ({exc})") from exc
        if self._control is not None:
            self._control.audit.record("drift.reference", request.model, after={"source": reference.source,
                                       "samples": reference.samples, "features": len(reference.features)})  # fmt: skip
        return drift_to_proto(drift, request.model)

    @_statuses
    async def GetAudit(self, request: pb.GetAuditRequest, context: Context) -> pb.GetAuditResponse:
        records = await self._loop().audit.records()
        answer = pb.GetAuditResponse()
        if request.verify:
            count, broken = verify(records)
            answer.verified, answer.verified_count = broken is None, count
            if broken is not None:
                answer.broken_id, answer.broken_reason = str(broken.id), broken.reason
        chosen = [r for r in records if (not request.model or r.get("target") == request.model)
                  and (r.get("time") or 0) >= request.since]  # fmt: skip
        if request.limit:
            chosen = chosen[-request.limit :]
        answer.records.extend(audit_to_proto(r) for r in chosen)
        return answer

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


def token_names(token: str | None, tokens: dict[str, str]) -> dict[str, str]:
    """`authorization` values accepted, each with the name it acts as (the single token: `admin`)."""
    names = {f"Bearer {secret}": name for name, secret in tokens.items()}
    if token:
        names.setdefault(f"Bearer {token}", "admin")
    return names


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Every admin RPC needs `authorization: Bearer <token>` with a known token; else UNAUTHENTICATED."""

    def __init__(self, accepted: dict[str, str]) -> None:
        self._expected = [value.encode() for value in accepted]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        presented = dict(details.invocation_metadata or ()).get("authorization", "")
        offered = str(presented).encode()
        if any([hmac.compare_digest(offered, expected) for expected in self._expected]):  # each compared: no early exit
            return handler
        token = str(presented).removeprefix("Bearer").strip()
        reason = "missing bearer token" if not token else "wrong bearer token"

        async def refuse(request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"admin API: {reason} (authorization metadata)")

        if handler is not None and handler.response_streaming:

            async def refuse_stream(request: Any, context: Context) -> AsyncIterator[None]:
                await refuse(request, context)
                yield None

            return grpc.unary_stream_rpc_method_handler(refuse_stream)
        return grpc.unary_unary_rpc_method_handler(refuse)


def admin_server(config: GatewayConfig, servicer: AdminServicer) -> grpc.aio.Server:
    """The admin API's server, behind its bearer token."""
    assert config.admin is not None
    token = config.admin.token or os.environ.get(ADMIN_TOKEN_ENV)
    if not token and not config.admin.tokens:
        raise ConfigError(
            f"admin: a bearer token is required (admin.token, admin.tokens, --admin-token or {ADMIN_TOKEN_ENV})"
        )
    accepted = token_names(token, config.admin.tokens)
    servicer.actors = accepted
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor(accepted)])
    admin_pb2_grpc.add_GatewayAdminServicer_to_server(servicer, server)
    admin_service = pb.DESCRIPTOR.services_by_name["GatewayAdmin"].full_name
    reflection.enable_server_reflection((admin_service, reflection.SERVICE_NAME), server)
    return server


def listen(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)
