"""Per-request routing: a pure function of the route, the request's metadata and a random draw.

Precedence: a version the caller named > the first matching rule > the sticky key > the weights.
Sticky keys use weighted rendezvous hashing: every replica computes the same variant for the
same key with no shared state, and a weight change moves only the keys that must move (those
whose best-scoring variant changed: the minimum share).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from router.route import Route, ShadowPolicy, Variant

__all__ = ["Decision", "Router", "blake2b_64"]

Hash64 = Callable[[bytes], int]


def blake2b_64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Decision:
    primary: Variant
    shadows: tuple[tuple[Variant, ShadowPolicy], ...]
    reason: str


class Router:
    def __init__(self, draw: Callable[[], float] = random.random, hash64: Hash64 = blake2b_64) -> None:
        self._draw = draw
        self._hash64 = hash64

    def decide(self, route: Route, metadata: Mapping[str, str], requested_version: str = "") -> Decision:
        primary, reason = self._primary(route, metadata, requested_version)
        shadows = tuple(
            (variant, policy)
            for policy in route.shadows
            if policy.variant != primary.name
            and (variant := route.variant(policy.variant)) is not None
            and self._draw() < policy.fraction
        )
        return Decision(primary, shadows, reason)

    def _primary(self, route: Route, metadata: Mapping[str, str], requested_version: str) -> tuple[Variant, str]:
        if requested_version:
            return self._requested(route, requested_version), "requested-version"
        for rule in route.rules:
            if rule.matches(metadata) and (variant := route.variant(rule.variant)) is not None:
                return variant, f"match:{rule.header}"
        if route.sticky_header and (key := metadata.get(route.sticky_header)):
            return self.sticky(route, key), f"sticky:{route.sticky_header}"
        return self._weighted(route), "weighted"

    def _requested(self, route: Route, version: str) -> Variant:
        """The variant named (or pinned to) that version; otherwise that version of the heaviest one."""
        for variant in route.variants:
            if variant.name == version or variant.version == version:
                return variant
        heaviest = max(route.variants, key=lambda v: v.weight)
        return Variant(version, heaviest.pool, heaviest.model, version, 0)

    def _weighted(self, route: Route) -> Variant:
        total = sum(v.weight for v in route.variants)
        point = self._draw() * total
        for variant in route.variants:
            point -= variant.weight
            if point < 0 and variant.weight > 0:
                return variant
        return next(v for v in reversed(route.variants) if v.weight > 0)  # float rounding at the top end

    def sticky(self, route: Route, key: str) -> Variant:
        def score(variant: Variant) -> float:
            digest = self._hash64(f"{route.model}\0{variant.name}\0{key}".encode())
            uniform = (digest + 0.5) / 2.0**64  # in (0, 1)
            return variant.weight / -math.log(uniform)

        return max((v for v in route.variants if v.weight > 0), key=score)
