"""`rollouts.on_new_version`: which routes have a newer version in their baseline's pool (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.schema import NewVersionConfig
from gateway.rollout.new_versions import new_versions
from gateway.routes import Route, Variant


def _route(model: str, *variants: tuple[str, str, int], pool: str = "main") -> Route:
    return Route(model, tuple(Variant(name, pool, model, version, weight) for name, version, weight in variants))


def _index(pool: str, *entries: tuple[str, str, str]) -> dict[str, Any]:
    return {"pool": pool, "models": [{"name": n, "version": v, "state": s} for n, v, s in entries]}


def test_a_newer_ready_version_in_the_baselines_pool_is_found_once() -> None:
    routes = {"classifier": _route("classifier", ("v1", "1", 100), ("v2", "2", 0))}
    indexes = [_index("main", ("classifier", "1", "READY"), ("classifier", "2", "READY"),
                      ("classifier", "3", "READY"), ("classifier", "4", "UNAVAILABLE"))]  # fmt: skip
    found = new_versions(routes, indexes)
    assert [(f.model, f.variant.name, f.variant.version, f.variant.weight, f.baseline) for f in found] == [
        ("classifier", "v3", "3", 0, "v1")
    ]
    with_it = {"classifier": _route("classifier", ("v1", "1", 100), ("v3", "3", 0))}
    assert new_versions(with_it, indexes) == []  # already a variant: never again


def test_unpinned_routes_other_pools_older_versions_and_unwatched_models_are_left_alone() -> None:
    indexes = [_index("main", ("classifier", "5", "READY"), ("text", "1", "READY")),
               _index("other", ("identity", "9", "READY"))]  # fmt: skip
    assert new_versions({"classifier": _route("classifier", ("latest", "", 100))}, indexes) == []
    assert new_versions({"identity": _route("identity", ("v1", "1", 100))}, indexes) == []  # v9 is elsewhere
    assert new_versions({"text": _route("text", ("v2", "2", 100))}, indexes) == []  # older
    routes = {"classifier": _route("classifier", ("v1", "1", 100))}
    assert new_versions(routes, indexes, models=["text"]) == []
    assert len(new_versions(routes, indexes, models=["classifier"])) == 1


def test_the_spec_is_checked_as_a_rollouts_is() -> None:
    assert NewVersionConfig(spec={"steps": [10, 50], "interval_s": 5}).poll_s == 10.0
    with pytest.raises(ValueError, match="strictly increasing"):
        NewVersionConfig(spec={"steps": [50, 10]})
    with pytest.raises(ValueError, match="found by the gateway"):
        NewVersionConfig(spec={"candidate": "v9"})
