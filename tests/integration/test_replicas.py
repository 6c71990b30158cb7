"""Two gateway replicas sharing one Redis: route changes, sticky routing and the cache agree."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.local.processes import GatewayProcess
from gateway.local.redis_server import RedisServer, running_redis
from gateway.local.samples import digits
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request, versions_route

Replicas = tuple[GatewayProcess, GatewayProcess, RedisServer]


@contextlib.contextmanager
def _replicas(triton: TritonCli, tmp_path: Path, *flags: str) -> Iterator[Replicas]:
    with running_redis(tmp_path) as redis:
        args = ["--upstream", triton.address, "--redis", redis.url, "--admin-port", "0", "--admin-token", TOKEN, *flags]
        with (
            running_gateway(args, tmp_path / "a.log") as first,
            running_gateway(args, tmp_path / "b.log") as second,
        ):
            yield first, second, redis


@pytest.fixture
def replicas(triton: TritonCli, tmp_path: Path) -> Iterator[Replicas]:
    """Sharing routes only (`--redis`)."""
    with _replicas(triton, tmp_path) as shared:
        yield shared


@pytest.fixture
def cached_replicas(triton: TritonCli, tmp_path: Path) -> Iterator[Replicas]:
    """Sharing routes and the cache's second tier."""
    with _replicas(triton, tmp_path, "--cache") as shared:
        yield shared


def _weights(admin: Admin, model: str) -> list[int]:
    return [v.weight for v in admin.routes(model).routes[0].variants]


def test_a_change_through_one_replica_reaches_the_other_within_a_second(
    replicas: Replicas,
) -> None:
    first, second, _ = replicas
    admin_a, admin_b = Admin(first.admin_address), Admin(second.admin_address)
    admin_a.set_weights("classifier", **{"1": 70, "2": 30})
    changed = time.monotonic()
    while _weights(admin_b, "classifier") != [70, 30] and time.monotonic() - changed < 1.0:
        time.sleep(0.02)
    assert _weights(admin_b, "classifier") == [70, 30]
    admin_b.stub.Promote(apb.PromoteRequest(model="classifier", variant="1"), metadata=AUTH, timeout=5)
    deadline = time.monotonic() + 1.0
    while _weights(admin_a, "classifier") != [100, 0] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _weights(admin_a, "classifier") == [100, 0]
    client = Client(first.address)
    assert {client.infer(digit_request(digits()["pixels"][0]))[1] for _ in range(10)} == {"1"}
    client.close()
    admin_a.close()
    admin_b.close()


def test_sticky_keys_get_the_same_variant_on_both_replicas(
    replicas: Replicas,
) -> None:
    first, second, _ = replicas
    Admin(first.admin_address).set_route(versions_route("classifier", {"1": 50, "2": 50}, sticky_header="x-user-id"))
    time.sleep(0.5)
    a, b = Client(first.address), Client(second.address)
    request = digit_request(digits()["pixels"][1])
    for user in (f"user-{i}" for i in range(100)):
        assert a.infer(request, **{"x-user-id": user})[1] == b.infer(request, **{"x-user-id": user})[1]
    a.close()
    b.close()


def test_a_replica_started_later_loads_the_shared_routes(replicas: Replicas, triton: TritonCli, tmp_path: Path) -> None:
    first, _, redis = replicas
    Admin(first.admin_address).set_weights("classifier", **{"1": 40, "2": 60})
    time.sleep(0.3)
    args = ["--upstream", triton.address, "--redis", redis.url, "--admin-port", "0", "--admin-token", TOKEN]
    with running_gateway(args, tmp_path / "c.log") as third:
        assert _weights(Admin(third.admin_address), "classifier") == [40, 60]


def test_the_cache_is_shared(cached_replicas: Replicas) -> None:
    first, second, _ = cached_replicas
    request = digit_request(np.random.default_rng().random(64))
    a, b = Client(first.address), Client(second.address)
    assert a.call(request)[1]["x-cache"] == "miss"
    deadline = time.monotonic() + 2
    outcome = ""
    while outcome != "hit-l2" and time.monotonic() < deadline:
        outcome = b.call(request, cache_control="no-store")[1]["x-cache"]
    assert outcome == "hit-l2"
    a.close()
    b.close()
