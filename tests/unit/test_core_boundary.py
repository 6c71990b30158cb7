"""The boundary to the native core: what Python hands over is what the core reads."""

from __future__ import annotations

import json

import pytest

from gateway._core import Core
from gateway.config.boundary import core_config, reflection_descriptors, routes_to_core
from gateway.config.schema import parse_config
from gateway.routes import MatchOp, MatchRule, Route, Variant, route_from_core

CONFIG = {
    "listen": "127.0.0.1:0",
    "pools": {
        "b": {"endpoints": ["127.0.0.1:1"], "hedge_delay_ms": None},
        "a": {"endpoints": ["127.0.0.1:2"], "lb_policy": "round_robin"},
    },
    "default_pool": "b",
}


def _core(config: dict[str, object]) -> Core:
    return Core(json.dumps(config), *reflection_descriptors())


def test_the_core_reads_the_configuration_python_validated() -> None:
    handed = core_config(parse_config(CONFIG | {"workers": 2}), observations=100)
    understood = json.loads(_core(handed).config_json())
    assert understood == handed
    assert [pool["name"] for pool in understood["pools"]] == ["b", "a"]  # the file's order: ServerMetadata's pool


def test_route_tables_round_trip_and_bad_ones_are_refused() -> None:
    core = _core(core_config(parse_config(CONFIG)))
    route = Route(
        "m",
        (Variant("1", "b", "m", "1", 10), Variant("2", "a", "m-up", "", 90)),
        (MatchRule("x-tier", MatchOp.PREFIX, ("gold",), "1"),),
        "x-user",
    )
    core.set_routes(routes_to_core([route]))
    assert [route_from_core(r) for r in json.loads(core.routes())] == [route]
    with pytest.raises(ValueError, match="unknown pool"):
        core.set_routes(routes_to_core([Route("m", (Variant("1", "nope", "m"),))]))
    with pytest.raises(ValueError, match="all weights are 0"):
        core.set_routes(routes_to_core([Route("m", (Variant("1", "a", "m", weight=0),))]))
    assert [route_from_core(r) for r in json.loads(core.routes())] == [route]  # the old table stands


def test_reflection_knows_every_served_service_and_its_files() -> None:
    services, files, symbols = reflection_descriptors()
    assert services == [
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    names = {name for name, _, _ in files}
    assert {"grpc_service.proto", "model_config.proto"} <= names
    assert symbols["inference.GRPCInferenceService.ModelInfer"] == "grpc_service.proto"
    assert symbols["inference.ModelConfig"] == "model_config.proto"
    assert all(dependency in names for _, _, dependencies in files for dependency in dependencies)
