"""Routing decisions (pure): split, match precedence, stickiness and minimal movement, shadows."""

from __future__ import annotations

import itertools
import random

import pytest

from router import MatchOp, MatchRule, Route, Router, ShadowPolicy, Variant

V1 = Variant("v1", "pool", "classifier", "1", 90)
V2 = Variant("v2", "pool", "classifier", "2", 10)
ROUTE = Route("classifier", (V1, V2))


def _draws(*values: float) -> Router:
    sequence = itertools.cycle(values)
    return Router(draw=lambda: next(sequence))


def test_weights_split_the_unit_interval() -> None:
    """A draw below 0.9 lands on v1 (weight 90 of 100), at or above it on v2."""
    assert _draws(0.0).decide(ROUTE, {}).primary == V1
    assert _draws(0.8999).decide(ROUTE, {}).primary == V1
    assert _draws(0.9).decide(ROUTE, {}).primary == V2
    assert _draws(0.999999).decide(ROUTE, {}).primary == V2


def test_zero_weight_variant_never_drawn() -> None:
    route = Route("m", (Variant("a", "p", "m", weight=0), Variant("b", "p", "m", weight=5)))
    assert {_draws(d).decide(route, {}).primary.name for d in (0.0, 0.5, 0.99999)} == {"b"}


def test_split_frequencies_follow_weights() -> None:
    router = Router(draw=random.Random(1).random)
    picks = [router.decide(ROUTE, {}).primary.name for _ in range(20_000)]
    assert abs(picks.count("v2") / len(picks) - 0.1) < 0.01  # sd 0.0021: ~4.7 sigma


def test_match_rule_overrides_weights_and_first_match_wins() -> None:
    route = Route(
        "classifier",
        (V1, Variant("v2", "pool", "classifier", "2", 0)),
        rules=(
            MatchRule("x-tenant", MatchOp.EQUALS, ("beta",), "v2"),
            MatchRule("x-tenant", MatchOp.PREFIX, ("be",), "v1"),
            MatchRule("x-region", MatchOp.ONE_OF, ("eu", "us"), "v2"),
        ),
        sticky_header="x-user-id",
    )
    router = _draws(0.0)
    assert router.decide(route, {"x-tenant": "beta", "x-user-id": "u"}).reason == "match:x-tenant"
    assert router.decide(route, {"x-tenant": "beta"}).primary.name == "v2"
    assert router.decide(route, {"x-tenant": "bert"}).primary.name == "v1"
    assert router.decide(route, {"x-region": "us"}).primary.name == "v2"
    assert router.decide(route, {"x-region": "asia"}).primary.name == "v1"


def test_requested_version_wins_over_everything() -> None:
    route = Route("classifier", (V1, V2), rules=(MatchRule("x-tenant", MatchOp.EQUALS, ("b",), "v1"),))
    decision = _draws(0.0).decide(route, {"x-tenant": "b"}, requested_version="2")
    assert (decision.primary, decision.reason) == (V2, "requested-version")


def test_requested_unknown_version_goes_to_the_heaviest_variants_pool() -> None:
    decision = _draws(0.0).decide(ROUTE, {}, requested_version="7")
    assert decision.primary == Variant("7", "pool", "classifier", "7", 0)


def test_sticky_key_is_stable_and_agrees_across_routers() -> None:
    route = Route("classifier", (V1, V2), sticky_header="x-user-id")
    first, second = Router(draw=lambda: 0.0), Router(draw=lambda: 0.99)
    for user in map(str, range(500)):
        metadata = {"x-user-id": user}
        assert first.decide(route, metadata).primary == second.decide(route, metadata).primary
    assert first.decide(route, {"x-user-id": "7"}).reason == "sticky:x-user-id"


def test_sticky_shares_follow_weights() -> None:
    route = Route("classifier", (V1, V2), sticky_header="x-user-id")
    names = [Router().sticky(route, f"user-{i}").name for i in range(20_000)]
    assert abs(names.count("v2") / len(names) - 0.1) < 0.01


@pytest.mark.parametrize(("before", "after"), [(10, 50), (50, 10), (10, 0), (0, 100)])
def test_weight_change_moves_only_the_minimum_share(before: int, after: int) -> None:
    """Keys only move towards the variant that gained weight; the moved share is the weight shift."""

    def route(v2_weight: int) -> Route:
        return Route("m", (Variant("v1", "p", "m", weight=100 - v2_weight), Variant("v2", "p", "m", weight=v2_weight)),
                     sticky_header="k")  # fmt: skip

    router = Router()
    keys = [f"user-{i}" for i in range(20_000)]
    old = [router.sticky(route(before), k).name for k in keys] if before < 100 else ["v2"] * len(keys)
    new = [router.sticky(route(after), k).name for k in keys]
    moved = [(o, n) for o, n in zip(old, new, strict=True) if o != n]
    gainer = "v2" if after > before else "v1"
    assert all(n == gainer for _, n in moved)
    assert abs(len(moved) / len(keys) - abs(after - before) / 100) < 0.012


def test_sticky_hash_is_injectable() -> None:
    route = Route("m", (Variant("a", "p", "m", weight=1), Variant("b", "p", "m", weight=1)), sticky_header="k")
    always_a = Router(hash64=lambda data: 0 if b"\0a\0" in data else 2**63)
    assert always_a.sticky(route, "anything").name == "b"  # a small uniform draw is a low score


def test_shadows_are_sampled_and_never_the_primary() -> None:
    route = Route("m", (V1, V2), shadows=(ShadowPolicy("v2", 0.5), ShadowPolicy("v1", 1.0)))
    decision = _draws(0.0).decide(route, {})  # primary v1 (draw 0), v2 sampled (0 < 0.5)
    assert [v.name for v, _ in decision.shadows] == ["v2"]
    assert _draws(0.95, 0.7).decide(route, {}).shadows[0][0].name == "v1"  # primary v2; v2 skipped, v1 at 1.0
    assert _draws(0.0, 0.6).decide(route, {}).shadows == ()  # v2 sampled out (0.6 >= 0.5)


def test_default_shadow_fraction_sends_nothing() -> None:
    route = Route("m", (V1, V2), shadows=(ShadowPolicy("v2"),))
    assert _draws(0.0).decide(route, {}).shadows == ()
