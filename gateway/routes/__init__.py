"""Routes as the control plane holds them (the core decides with them: crates/router).

- `route`: Variant, MatchRule, ShadowPolicy, Route (immutable values), their core shape
- `store`: RouteStore, the live table with history (rollback) and change events
- `checks`: check_route (the core's checks), RouteError naming the key path
- `sync`: RouteSync, the table shared by replicas through Redis
"""

from gateway.routes.checks import RouteError, check_route
from gateway.routes.route import MatchOp, MatchRule, Route, ShadowPolicy, Variant, route_from_core
from gateway.routes.store import RouteEvent, RouteStore, UnknownRoute

__all__ = [
    "MatchOp",
    "MatchRule",
    "Route",
    "RouteError",
    "RouteEvent",
    "RouteStore",
    "ShadowPolicy",
    "UnknownRoute",
    "Variant",
    "check_route",
    "route_from_core",
]
