"""Configuration validation names the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, config_for_upstreams, load_config, parse_config

VALID = {"pools": {"a": {"endpoints": ["127.0.0.1:8001"]}}, "routes": {"m": {"pool": "a", "version": "2"}}}


def _error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def test_valid_config_is_frozen() -> None:
    config = parse_config(VALID)
    assert config.routes["m"].version == "2" and config.default_pool is None
    with pytest.raises(ValueError, match="frozen"):
        config.listen = "x"


def test_bad_endpoint_names_key_and_value() -> None:
    message = _error({"pools": {"a": {"endpoints": ["nohost"]}}})
    assert "pools.a.endpoints.0" in message and "'nohost'" in message


def test_unknown_route_pool() -> None:
    message = _error({**VALID, "routes": {"m": {"pool": "b"}}})
    assert message == "routes.m.pool: unknown pool 'b' (pools: ['a'])"


def test_unknown_default_pool() -> None:
    assert "default_pool: unknown pool 'zz'" in _error({**VALID, "default_pool": "zz"})


def test_non_numeric_version() -> None:
    message = _error({**VALID, "routes": {"m": {"pool": "a", "version": "latest"}}})
    assert "routes.m.version" in message and "'latest'" in message


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
