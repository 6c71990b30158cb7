"""What a route is: variants with weights, match rules, a sticky key and shadow policies.

All values are immutable; a change makes a new Route, so a request that picked its variant from
one Route finishes on it whatever happens to the table meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

__all__ = ["MatchOp", "MatchRule", "Route", "ShadowPolicy", "Variant"]


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

    def matches(self, metadata: Mapping[str, str]) -> bool:
        value = metadata.get(self.header)
        if value is None:
            return False
        if self.op is MatchOp.PREFIX:
            return any(value.startswith(prefix) for prefix in self.values)
        return value in self.values  # EQUALS holds one value, ONE_OF several


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
