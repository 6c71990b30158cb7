"""Configuration validation names the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.flags import ServeFlags, serve_config
from gateway.config.policies import affinity_for_core
from gateway.config.schema import ConfigError, config_for_upstreams, load_config, parse_config

VARIANTS = [{"name": "v1", "pool": "a", "version": "1", "weight": 90}, {"name": "v2", "pool": "a", "weight": 10}]
VALID = {"pools": {"a": {"endpoints": ["127.0.0.1:8001"]}}, "routes": {"m": {"variants": VARIANTS}}}


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def test_valid_config_is_frozen() -> None:
    config = parse_config(VALID)
    assert config.routes["m"].variants[0].version == "1" and config.default_pool is None
    with pytest.raises(ValueError, match="frozen"):
        config.listen = "x"


def test_bad_endpoint_names_key_and_value() -> None:
    message = _error({"pools": {"a": {"endpoints": ["nohost"]}}})
    assert "pools.a.endpoints.0" in message and "'nohost'" in message


def test_unknown_route_pool() -> None:
    message = _error({**VALID, "routes": {"m": {"variants": [{"name": "x", "pool": "b", "weight": 1}]}}})
    assert message == "routes.m.variants.0.pool: unknown pool 'b' (pools: ['a'])"


def test_all_weights_zero() -> None:
    message = _error({**VALID, "routes": {"m": {"variants": [{"name": "x", "pool": "a"}]}}})
    assert message.startswith("routes.m.variants: all weights are 0")


def test_route_with_rules_sticky_and_shadow() -> None:
    route = {
        "variants": VARIANTS,
        "match": [
            {"header": "X-Tenant", "equals": "beta", "variant": "v2"},
            {"header": "x-r", "one_of": ["a"], "variant": "v1"},
        ],
        "sticky_header": "X-User-Id",
        "shadows": [{"variant": "v2", "fraction": 0.25}],
    }
    built = parse_config({**VALID, "routes": {"m": route}}).routes["m"].to_route("m")
    assert [(r.header, r.op.value, r.values) for r in built.rules] == [
        ("x-tenant", "equals", ("beta",)),
        ("x-r", "one_of", ("a",)),
    ]
    assert built.sticky_header == "x-user-id" and built.shadows[0].max_inflight == 16
    assert built.variants[1].model == "m" and built.variants[1].version == ""


def test_match_rule_needs_exactly_one_operator() -> None:
    route = {"variants": VARIANTS, "match": [{"header": "x", "equals": "a", "prefix": "b", "variant": "v1"}]}
    assert "routes.m.match.0: Value error" not in _error({**VALID, "routes": {"m": route}})
    assert "give exactly one of equals / one_of / prefix" in _error({**VALID, "routes": {"m": route}})


def test_unknown_rule_variant() -> None:
    route = {"variants": VARIANTS, "match": [{"header": "x", "equals": "a", "variant": "v9"}]}
    assert _error({**VALID, "routes": {"m": route}}).startswith("routes.m.match.0.variant: unknown variant 'v9'")


def test_unknown_default_pool() -> None:
    assert "default_pool: unknown pool 'zz'" in _error({**VALID, "default_pool": "zz"})


def test_non_numeric_version() -> None:
    message = _error({**VALID, "routes": {"m": {"variants": [{"name": "x", "pool": "a", "version": "latest"}]}}})
    assert "routes.m.variants.0.version" in message and "'latest'" in message


def test_unknown_key_is_rejected() -> None:
    assert "max_mesage_bytes" in _error({**VALID, "max_mesage_bytes": 5})


def test_negative_size_limit() -> None:
    assert "max_message_bytes" in _error({**VALID, "max_message_bytes": -1})


def test_no_pools() -> None:
    assert "pools" in _error({"pools": {}})


def test_zero_config_routes_everything_to_one_pool() -> None:
    config = config_for_upstreams(["h1:1", "h2:2"], "127.0.0.1:0")
    assert config.default_pool == "default" and config.pools["default"].endpoints == ["h1:1", "h2:2"]


def test_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pools:\n  a:\n    endpoints: ['127.0.0.1:1']\nlisten: 'bad'\n")
    with pytest.raises(ConfigError, match="listen: expected HOST:PORT"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_the_metrics_listener_follows_host_unless_told_otherwise(tmp_path: Path) -> None:
    """Issue 27, finding 8: `--host 127.0.0.1` left /metrics on 0.0.0.0, with no flag to move it."""
    upstream = ("127.0.0.1:8001",)
    assert serve_config(ServeFlags(upstream=upstream, host="127.0.0.1")).telemetry.metrics_host == "127.0.0.1"
    chosen = ServeFlags(upstream=upstream, host="127.0.0.1", metrics_host="10.0.0.5")
    assert serve_config(chosen).telemetry.metrics_host == "10.0.0.5"
    assert serve_config(ServeFlags(upstream=upstream)).telemetry.metrics_host == "0.0.0.0"
    path = tmp_path / "c.yaml"
    path.write_text("pools:\n  a:\n    endpoints: ['127.0.0.1:1']\ntelemetry:\n  metrics_host: 192.0.2.1\n")
    assert serve_config(ServeFlags(config=path, host="127.0.0.1")).telemetry.metrics_host == "192.0.2.1"


def test_an_unquoted_version_is_a_version_and_a_yaml_error_names_the_file(tmp_path: Path) -> None:
    """Issue 27, finding 10: `version: 2` was refused (`Input should be a valid string`), and a
    syntax error named `"<unicode string>"` instead of the file."""
    variants = [{"name": "v2", "pool": "a", "version": 2, "weight": 100}]
    config = parse_config({"pools": {"a": {"endpoints": ["127.0.0.1:1"]}}, "routes": {"m": {"variants": variants}}})
    assert config.routes["m"].variants[0].version == "2"
    assert "valid string" in _error({**VALID, "routes": {"m": {"variants": [{**variants[0], "version": True}]}}})
    path = tmp_path / "gateway.yaml"
    path.write_text("pools:\n  a: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f'in "{path}", line' in str(caught.value) and "<unicode string>" not in str(caught.value)


def test_route_affinity_is_checked_and_handed_to_the_core() -> None:
    message = _error(
        {**VALID, "routes": {"m": {"variants": VARIANTS, "affinity": {"input": "PROMPT", "block_size": 0}}}}
    )
    assert message.startswith("routes.m.affinity.block_size")
    route = {"variants": VARIANTS, "affinity": {"input": "PROMPT", "session_header": "X-Conversation"}}
    handed = affinity_for_core(parse_config({**VALID, "routes": {"m": route}}))
    assert handed == {"m": {"input": "PROMPT", "block_size": 16, "session_header": "x-conversation",
                            "load_factor": 1.25, "max_blocks": 512}}  # fmt: skip
