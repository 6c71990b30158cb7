"""Routes as the control plane holds them (the core decides with them: crates/router).

- `route`: Variant, MatchRule, ShadowPolicy, Route (immutable values), their core shape
- `store`: RouteStore, the live table with history (rollback) and change events
- `validation`: check_route (the core's checks), RouteError naming the key path
"""

from router.route import MatchOp, MatchRule, Route, ShadowPolicy, Variant, route_from_core
from router.store import RouteEvent, RouteStore, UnknownRoute
from router.validation import RouteError, check_route

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
