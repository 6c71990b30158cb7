"""The live table: validation naming the key, atomic changes, rollback history, events."""

from __future__ import annotations

import pytest

from gateway.routes import (
    MatchOp,
    MatchRule,
    Route,
    RouteError,
    RouteEvent,
    RouteStore,
    ShadowPolicy,
    UnknownRoute,
    Variant,
)

ROUTE = Route("m", (Variant("1", "p", "m", "1", 100), Variant("2", "p", "m", "2", 0)))


def _store() -> RouteStore:
    store = RouteStore({"p", "q"}, history=3)
    store.set_route(ROUTE)
    return store


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (Route("m", ()), "routes.m.variants: a route needs at least one variant"),
        (Route("m", (Variant("1", "zz", "m", weight=1),)), "routes.m.variants.0.pool: unknown pool 'zz'"),
        (Route("m", (Variant("1", "p", "m", weight=0),)), "routes.m.variants: all weights are 0"),
        (Route("m", (Variant("1", "p", "m", weight=1), Variant("1", "p", "m"))), "routes.m.variants.1.name"),
        (Route("m", (Variant("a", "p", "m", "x", 1),)), "routes.m.variants.0.version"),
        (
            Route("m", ROUTE.variants, rules=(MatchRule("x-t", MatchOp.EQUALS, ("a",), "9"),)),
            "routes.m.match.0.variant",
        ),
        (Route("m", ROUTE.variants, shadows=(ShadowPolicy("9", 1.0),)), "routes.m.shadows.0.variant: unknown variant"),
        (Route("m", ROUTE.variants, shadows=(ShadowPolicy("2", 1.5),)), "routes.m.shadows.0.fraction"),
    ],
)
def test_invalid_routes_are_rejected_and_the_table_is_unchanged(route: Route, message: str) -> None:
    store = _store()
    with pytest.raises(RouteError) as caught:
        store.set_route(route)
    assert str(caught.value).startswith(message)
    assert store.get("m") == ROUTE and store.revision == 1


def test_set_weights_names_unknown_variants() -> None:
    store = _store()
    with pytest.raises(RouteError, match=r"routes.m.weights: unknown variant\(s\) \['3'\]"):
        store.set_weights("m", {"3": 5})
    with pytest.raises(RouteError, match="all weights are 0"):
        store.set_weights("m", {"1": 0})
    assert store.set_weights("m", {"1": 90, "2": 10}).variants[1].weight == 10


def test_promote_is_one_change_and_rollback_restores_each_previous_table() -> None:
    store = _store()
    store.set_weights("m", {"1": 90, "2": 10})
    blue_green = store.promote("m", "2")
    assert [v.weight for v in blue_green.variants] == [0, 100]
    assert [v.weight for v in store.rollback("m").variants] == [90, 10]
    assert store.rollback("m") == ROUTE
    with pytest.raises(RouteError, match="no earlier route"):
        store.rollback("m")


def test_history_is_bounded() -> None:
    store = _store()
    for weight in range(1, 10):
        store.set_weights("m", {"2": weight})
    for _ in range(3):
        store.rollback("m")
    with pytest.raises(RouteError):
        store.rollback("m")
    assert store.get("m") is not None and store.get("m").variants[1].weight == 6  # type: ignore[union-attr]


def test_snapshots_do_not_change_under_a_reader() -> None:
    store = _store()
    before = store.snapshot()
    store.promote("m", "2")
    assert before["m"] == ROUTE and store.snapshot()["m"] != ROUTE


def test_events_reach_subscribers_until_they_leave() -> None:
    store = _store()
    seen: list[RouteEvent] = []
    unsubscribe = store.subscribe(seen.append)
    store.set_shadow("m", ShadowPolicy("2", 1.0, 4))
    unsubscribe()
    store.promote("m", "2")
    assert [(e.kind, e.model, e.revision) for e in seen] == [("shadow", "m", 2)]
    assert seen[0].route.shadows == (ShadowPolicy("2", 1.0, 4),)


def test_shadow_fraction_zero_removes_the_policy() -> None:
    store = _store()
    store.set_shadow("m", ShadowPolicy("2", 0.5))
    assert store.set_shadow("m", ShadowPolicy("2", 0.0)).shadows == ()


def test_unknown_model() -> None:
    with pytest.raises(UnknownRoute):
        _store().promote("other", "1")


def test_discovered_route_does_not_replace_an_operators() -> None:
    store = _store()
    assert store.discovered(Route("m", (Variant("9", "p", "m", "9", 1),), discovered=True)) == ROUTE
