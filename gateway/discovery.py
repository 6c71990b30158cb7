"""Zero-config routes: a model with no configured route gets one from Triton's ready versions.

Variants are named by version number ("1", "2", ...), with all the weight on the latest, so an
operator can shift traffic between versions (`gatewayctl set-weights classifier 1=90 2=10`)
without writing any configuration.
"""

from __future__ import annotations

import asyncio

from tritonclient.grpc import service_pb2

from gateway.errors import ModelNotFound
from gateway.upstream import Pool
from router import Route, RouteStore, Variant

__all__ = ["Discovery"]

_READY_INDEX = service_pb2.RepositoryIndexRequest(ready=True).SerializeToString()


class Discovery:
    def __init__(self, store: RouteStore, pool: Pool) -> None:
        self._store = store
        self._pool = pool
        self._inflight: dict[str, asyncio.Task[Route]] = {}

    async def route_for(self, model: str, timeout: float | None) -> Route:
        task = self._inflight.get(model)
        if task is None:
            task = self._inflight[model] = asyncio.create_task(self._discover(model, timeout))
            task.add_done_callback(lambda _: self._inflight.pop(model, None))
        return await asyncio.shield(task)

    async def _discover(self, model: str, timeout: float | None) -> Route:
        index = service_pb2.RepositoryIndexResponse.FromString(
            await self._pool.call("RepositoryIndex", _READY_INDEX, timeout)
        )
        versions = sorted({m.version for m in index.models if m.name == model and m.version.isdigit()}, key=int)
        if not versions:
            raise ModelNotFound(f"unknown model '{model}': pool '{self._pool.name}' serves no ready version of it")
        variants = tuple(Variant(v, self._pool.name, model, v, 100 if v == versions[-1] else 0) for v in versions)
        return self._store.discovered(Route(model, variants, discovered=True))
