"""Routing policy, sans-IO: no grpc, no asyncio. Routes in, decisions out.

- `route`: Variant, MatchRule, ShadowPolicy, Route (immutable values)
- `decide`: Router.decide(route, metadata, requested version) -> Decision
- `store`: RouteStore, the live table with history (rollback) and change events
- `validation`: check_route, RouteError naming the key path
"""

from router.decide import Decision, Router, blake2b_64
from router.route import MatchOp, MatchRule, Route, ShadowPolicy, Variant
from router.store import RouteEvent, RouteStore, UnknownRoute
from router.validation import RouteError, check_route

__all__ = [
    "Decision",
    "MatchOp",
    "MatchRule",
    "Route",
    "RouteError",
    "RouteEvent",
    "RouteStore",
    "Router",
    "ShadowPolicy",
    "UnknownRoute",
    "Variant",
    "blake2b_64",
    "check_route",
]
