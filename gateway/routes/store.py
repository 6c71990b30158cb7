"""The live route table: atomic changes, per-model history for rollback, and change events.

Writes replace the whole mapping (copy on write), so a reader's snapshot never changes under it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.routes.checks import RouteError, check_route
from gateway.routes.route import Route, ShadowPolicy

__all__ = ["RouteEvent", "RouteStore", "UnknownRoute"]


class UnknownRoute(LookupError):
    """No route for that model."""


@dataclass(frozen=True, slots=True)
class RouteEvent:
    revision: int
    kind: str  # set | weights | promote | shadow | rollback | reload | discovered
    model: str
    route: Route
    previous: Route | None = None  # the model's route before this change


Listener = Callable[[RouteEvent], None]


class RouteStore:
    def __init__(self, pools: Collection[str], history: int = 10) -> None:
        self.pools = frozenset(pools)
        self.revision = 0
        self._routes: Mapping[str, Route] = MappingProxyType({})
        self._history: dict[str, deque[Route]] = {}
        self._history_size = history
        self._listeners: list[Listener] = []

    def get(self, model: str) -> Route | None:
        return self._routes.get(model)

    def snapshot(self) -> Mapping[str, Route]:
        return self._routes

    def require(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is None:
            raise UnknownRoute(f"no route for model '{model}'")
        return route

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _install(self, route: Route, kind: str, remember: bool) -> Route:
        previous = self._routes.get(route.model)
        if remember and previous is not None:
            self._history.setdefault(route.model, deque(maxlen=self._history_size)).append(previous)
        self._routes = MappingProxyType({**self._routes, route.model: route})
        self.revision += 1
        event = RouteEvent(self.revision, kind, route.model, route, previous)
        for listener in list(self._listeners):
            listener(event)
        return route

    def set_route(self, route: Route, kind: str = "set") -> Route:
        return self._install(check_route(route, self.pools), kind, remember=True)

    def discovered(self, route: Route) -> Route:
        """A route the gateway built itself; an operator's route for the model wins a race."""
        return self._routes.get(route.model) or self._install(check_route(route, self.pools), "discovered", False)

    def _check_variants(self, route: Route, names: Collection[str], what: str) -> None:
        known = [v.name for v in route.variants]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise RouteError(f"routes.{route.model}.{what}: unknown variant(s) {unknown} (variants: {known})")

    def set_weights(self, model: str, weights: Mapping[str, int]) -> Route:
        route = self.require(model)
        self._check_variants(route, weights, "weights")
        return self.set_route(route.with_weights(dict(weights)), "weights")

    def promote(self, model: str, variant: str) -> Route:
        route = self.require(model)
        self._check_variants(route, [variant], "promote")
        return self.set_route(route.promoted(variant), "promote")

    def set_shadow(self, model: str, policy: ShadowPolicy) -> Route:
        route = self.require(model)
        self._check_variants(route, [policy.variant], "shadows")
        return self.set_route(route.with_shadow(policy), "shadow")

    def rollback(self, model: str) -> Route:
        self.require(model)
        history = self._history.get(model)
        if not history:
            raise RouteError(f"routes.{model}: no earlier route to roll back to")
        return self._install(history.pop(), "rollback", remember=False)

    def remove(self, model: str) -> None:
        """Forget a route (the model falls back to zero-config routing, if any)."""
        if model in self._routes:
            self._routes = MappingProxyType({m: r for m, r in self._routes.items() if m != model})
            self._history.pop(model, None)
            self.revision += 1

    def replace(self, routes: Collection[Route], kind: str = "reload") -> None:
        """Install several routes together: all are checked before any is installed."""
        checked = [check_route(route, self.pools) for route in routes]
        for route in checked:
            if self._routes.get(route.model) != route:
                self._install(route, kind, remember=True)
