"""The route table: which pool, upstream model and version serve a public model name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class UnknownModel(LookupError):
    """No route serves this model name and there is no default pool."""


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream destination: a pool and the model name/version to ask it for."""

    pool: str
    model: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Explicit routes by public model name; anything else goes to `default_pool` if set."""

    routes: Mapping[str, Target] = field(default_factory=dict)
    default_pool: str | None = None

    def resolve(self, model: str, requested_version: str = "") -> Target:
        """The target for a request; a version the caller asked for wins over the route's."""
        route = self.routes.get(model)
        if route is None:
            if self.default_pool is None:
                raise UnknownModel(f"no route for model '{model}'")
            return Target(self.default_pool, model, requested_version)
        if requested_version:
            return Target(route.pool, route.model, requested_version)
        return route

    def pools(self) -> frozenset[str]:
        named = {target.pool for target in self.routes.values()}
        return frozenset(named | ({self.default_pool} if self.default_pool else set()))
