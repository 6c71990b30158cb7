"""The route table resolves public names to pool targets (pure)."""

from __future__ import annotations

import pytest

from router import RouteTable, Target, UnknownModel

TABLE = RouteTable({"public": Target("gpu", "private", "3")}, default_pool="cpu")


def test_routed_model_gets_its_target() -> None:
    assert TABLE.resolve("public") == Target("gpu", "private", "3")


def test_requested_version_wins_over_the_routes() -> None:
    assert TABLE.resolve("public", "1") == Target("gpu", "private", "1")


def test_unrouted_model_goes_to_the_default_pool_unchanged() -> None:
    assert TABLE.resolve("other", "2") == Target("cpu", "other", "2")


def test_without_default_pool_unrouted_is_unknown() -> None:
    with pytest.raises(UnknownModel, match="no route for model 'other'"):
        RouteTable({"public": Target("gpu", "private")}).resolve("other")


def test_pools_in_use() -> None:
    assert TABLE.pools() == frozenset({"gpu", "cpu"})
