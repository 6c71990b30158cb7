"""What a route is: variants with weights, match rules, a sticky key and shadow policies.

All values are immutable; a change makes a new Route. The core decides with them
(crates/router): `to_core` and `route_from_core` are the shape its serde types take.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

__all__ = ["MatchOp", "MatchRule", "Route", "ShadowPolicy", "Variant", "route_from_core"]


@dataclass(frozen=True, slots=True)
class Variant:
    """One way to serve a route: a pool and the upstream model name/version to ask it for."""

    name: str
    pool: str
    model: str
    version: str = ""
    weight: int = 0


class MatchOp(Enum):
    EQUALS = "equals"
    ONE_OF = "one_of"
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class MatchRule:
    """Requests whose metadata `header` matches go to `variant`, whatever the weights say."""

    header: str
    op: MatchOp
    values: tuple[str, ...]
    variant: str


@dataclass(frozen=True, slots=True)
class ShadowPolicy:
    """Copy a sampled `fraction` of the route's requests to `variant`, at most `max_inflight` at once."""

    variant: str
    fraction: float = 0.0
    max_inflight: int = 16


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    variants: tuple[Variant, ...]
    rules: tuple[MatchRule, ...] = ()
    sticky_header: str | None = None
    shadows: tuple[ShadowPolicy, ...] = ()
    # Built by the gateway from Triton's versions rather than written by an operator.
    discovered: bool = field(default=False, compare=False)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def with_weights(self, weights: dict[str, int]) -> Route:
        """Named variants get the given weights; the others keep theirs."""
        variants = tuple(replace(v, weight=weights.get(v.name, v.weight)) for v in self.variants)
        return replace(self, variants=variants)

    def promoted(self, name: str) -> Route:
        """Blue-green: all weight on one variant, in one change."""
        return replace(self, variants=tuple(replace(v, weight=100 if v.name == name else 0) for v in self.variants))

    def with_shadow(self, policy: ShadowPolicy) -> Route:
        """Add or replace the shadow policy of `policy.variant`; fraction 0 removes it."""
        others = tuple(s for s in self.shadows if s.variant != policy.variant)
        return replace(self, shadows=others + ((policy,) if policy.fraction > 0 else ()))

    def to_core(self) -> dict[str, Any]:
        """The route as the core reads it (crates/router/src/route.rs)."""
        return {
            "model": self.model,
            "variants": [
                {"name": v.name, "pool": v.pool, "model": v.model, "version": v.version, "weight": v.weight}
                for v in self.variants
            ],
            "rules": [
                {"header": r.header, "op": r.op.value, "values": list(r.values), "variant": r.variant}
                for r in self.rules
            ],
            "sticky_header": self.sticky_header,
            "shadows": [
                {"variant": s.variant, "fraction": s.fraction, "max_inflight": s.max_inflight} for s in self.shadows
            ],
            "discovered": self.discovered,
        }


def route_from_core(data: dict[str, Any]) -> Route:
    """A route the core wrote (its discoveries, its own table)."""
    return Route(
        model=data["model"],
        variants=tuple(Variant(v["name"], v["pool"], v["model"], v["version"], v["weight"]) for v in data["variants"]),
        rules=tuple(MatchRule(r["header"], MatchOp(r["op"]), tuple(r["values"]), r["variant"]) for r in data["rules"]),
        sticky_header=data["sticky_header"],
        shadows=tuple(ShadowPolicy(s["variant"], s["fraction"], s["max_inflight"]) for s in data["shadows"]),
        discovered=data["discovered"],
    )
