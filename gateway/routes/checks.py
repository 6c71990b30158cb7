"""Checks that a route can serve, in the core's one implementation (crates/router/src/check.rs):
the config, the admin API and route sync refuse what the core would, with the same messages."""

from __future__ import annotations

import json
from collections.abc import Collection

from gateway import _core
from gateway.routes.route import Route

__all__ = ["RouteError", "check_route"]


class RouteError(ValueError):
    """A route that must not be installed; the message starts with the offending key."""


def check_route(route: Route, pools: Collection[str]) -> Route:
    try:
        _core.check_route(json.dumps(route.to_core()), list(pools))
    except ValueError as exc:
        raise RouteError(str(exc)) from None
    return route
