"""Checks that a route can serve: errors name the key path and the bad value."""

from __future__ import annotations

from collections.abc import Collection

from router.route import Route

__all__ = ["RouteError", "check_route"]


class RouteError(ValueError):
    """A route that must not be installed; the message starts with the offending key."""


def check_route(route: Route, pools: Collection[str]) -> Route:
    key = f"routes.{route.model}"
    if not route.variants:
        raise RouteError(f"{key}.variants: a route needs at least one variant")
    names = [v.name for v in route.variants]
    for index, variant in enumerate(route.variants):
        where = f"{key}.variants.{index}"
        if not variant.name:
            raise RouteError(f"{where}.name: a variant needs a name")
        if variant.name in names[:index]:
            raise RouteError(f"{where}.name: variant {variant.name!r} is defined twice")
        if variant.pool not in pools:
            raise RouteError(f"{where}.pool: unknown pool {variant.pool!r} (pools: {sorted(pools)})")
        if variant.weight < 0:
            raise RouteError(f"{where}.weight: weights are >= 0, got {variant.weight}")
        if variant.version and not variant.version.isdigit():
            raise RouteError(f"{where}.version: a model version is a positive integer, got {variant.version!r}")
    if sum(v.weight for v in route.variants) == 0:
        raise RouteError(f"{key}.variants: all weights are 0, so no request could be served")
    for index, rule in enumerate(route.rules):
        if rule.variant not in names:
            raise RouteError(f"{key}.match.{index}.variant: unknown variant {rule.variant!r} (variants: {names})")
        if not rule.header or rule.header != rule.header.lower():
            raise RouteError(f"{key}.match.{index}.header: a lower-case metadata key is needed, got {rule.header!r}")
    for index, shadow in enumerate(route.shadows):
        if shadow.variant not in names:
            raise RouteError(f"{key}.shadows.{index}.variant: unknown variant {shadow.variant!r} (variants: {names})")
        if not 0.0 <= shadow.fraction <= 1.0:
            raise RouteError(f"{key}.shadows.{index}.fraction: must be within [0, 1], got {shadow.fraction}")
        if shadow.max_inflight < 1:
            raise RouteError(f"{key}.shadows.{index}.max_inflight: must be >= 1, got {shadow.max_inflight}")
    if route.sticky_header is not None and route.sticky_header != route.sticky_header.lower():
        raise RouteError(f"{key}.sticky_header: metadata keys are lower-case, got {route.sticky_header!r}")
    return route
