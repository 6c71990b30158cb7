"""Routes shared by every replica through Redis: what one changes, the others apply within a second.

A change made here (admin API) is written to `{namespace}route:{model}` (the admin API's Route
message) and announced on the `{namespace}routes` channel; every other replica reads and installs
it. A replica that starts loads the shared routes first. Last writer wins. Redis trouble never
touches requests: the replica keeps serving its own table and resubscribes with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.admin.convert import route_from_proto, route_to_proto
from gateway.routes import RouteError, RouteEvent, RouteStore
from gateway_admin import admin_pb2 as pb

__all__ = ["RouteSync"]

log = logging.getLogger(__name__)
_LOCAL_CHANGES = frozenset({"set", "weights", "promote", "shadow", "rollback"})
REMOTE = "remote"


class RouteSync:
    def __init__(self, store: RouteStore, url: str, namespace: str) -> None:
        self._store = store
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._namespace = namespace
        self._channel = f"{namespace}routes"
        self.origin = uuid.uuid4().hex
        self._pending: set[asyncio.Task[None]] = set()
        self._unsubscribe = store.subscribe(self._on_change)

    def _key(self, model: str) -> str:
        return f"{self._namespace}route:{model}"

    def _on_change(self, event: RouteEvent) -> None:
        if event.kind in _LOCAL_CHANGES:
            task = asyncio.create_task(self._publish(event))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _publish(self, event: RouteEvent) -> None:
        payload = route_to_proto(event.route).SerializeToString()
        message = json.dumps({"model": event.model, "origin": self.origin, "kind": event.kind})
        try:
            await self._client.set(self._key(event.model), payload)
            await self._client.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            log.warning("route change for %s not shared with other replicas: %s", event.model, exc)

    async def _apply(self, model: str) -> None:
        payload = await self._client.get(self._key(model))
        if not isinstance(payload, bytes) or not payload:
            return
        try:
            self._store.set_route(route_from_proto(pb.Route.FromString(payload)), kind=REMOTE)
        except RouteError as exc:  # e.g. a pool this replica does not have
            log.error("shared route for %s rejected here: %s", model, exc)

    async def load(self) -> None:
        """Install the routes the other replicas share (at start)."""
        try:
            async for key in self._client.scan_iter(match=f"{self._key('')}*", count=500):
                await self._apply(key.decode().removeprefix(self._key("")))
        except (RedisError, OSError) as exc:
            log.warning("could not load shared routes (serving the local table): %s", exc)

    async def run(self) -> None:
        """Follow the other replicas' changes until cancelled."""
        backoff = 0.5
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                await self.load()  # whatever changed while we were not listening
                backoff = 0.5
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    change = json.loads(message["data"])
                    if change.get("origin") != self.origin:
                        await self._apply(change["model"])
            except (RedisError, OSError) as exc:
                log.warning("route sync: redis unavailable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def close(self) -> None:
        self._unsubscribe()
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=1.0)
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
