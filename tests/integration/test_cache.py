"""The response cache through real gateways, a real Triton and Debian's redis-server."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
import yaml
from tritonclient.grpc import service_pb2 as pb

from gateway.local.processes import GatewayProcess
from gateway.local.redis_server import RedisServer, running_redis
from gateway.local.samples import infer_inputs
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client


def _request(model: str, values: np.ndarray, **inputs: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name, array in {"INPUT0": values, **inputs}.items():
        datatype = "BOOL" if array.dtype == np.bool_ else "FP32"
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


def _unique(size: int = 8) -> np.ndarray:
    return np.random.default_rng().standard_normal(size).astype(np.float32)


def _count(response: pb.ModelInferResponse) -> int:
    return int(np.frombuffer(response.raw_output_contents[1], np.int64)[0])


def _direct_count(triton: TritonCli) -> int:
    direct = Client(triton.address)
    try:
        response, _ = direct.stub.ModelInfer.with_call(_request("counter", _unique()), timeout=10)
        return _count(response)
    finally:
        direct.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@contextmanager
def _cached_gateway(triton: TritonCli, redis: RedisServer, log: Path, *extra: str) -> Iterator[GatewayProcess]:
    args = ["--upstream", triton.address, "--cache", "--redis", redis.url, "--admin-port", "0", "--admin-token", TOKEN]
    with running_gateway([*args, *extra], log) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def cached(
    triton: TritonCli, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with _cached_gateway(triton, redis_server, tmp_path_factory.mktemp("a") / "gateway.log") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def replica(
    triton: TritonCli, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with _cached_gateway(triton, redis_server, tmp_path_factory.mktemp("b") / "gateway.log") as gateway:
        yield gateway


@pytest.fixture
def client(cached: GatewayProcess) -> Iterator[Client]:
    channel = Client(cached.address)
    yield channel
    channel.close()


def test_repeat_is_a_hit_that_never_reaches_triton(client: Client, triton: TritonCli) -> None:
    request = _request("counter", _unique())
    first, meta_first = client.call(request)
    second, meta_second = client.call(request)
    assert (meta_first["x-cache"], meta_second["x-cache"]) == ("miss", "hit-l1")
    assert _count(second) == _count(first) and second == first
    assert _direct_count(triton) == _count(first) + 1  # nothing executed in between


def test_second_gateway_sharing_redis_hits_l2(client: Client, replica: GatewayProcess) -> None:
    request = _request("counter", _unique())
    stored, _ = client.call(request)
    other = Client(replica.address)
    deadline = time.monotonic() + 5  # the first gateway writes to Redis in the background
    outcome = ""
    while time.monotonic() < deadline and outcome != "hit-l2":
        response, trailing = other.call(request, cache_control="no-store")
        outcome = trailing["x-cache"]
        time.sleep(0.05)
    assert outcome == "hit-l2"
    assert response == stored
    assert other.call(request)[1]["x-cache"] == "hit-l1"  # promoted into the replica's own tier
    other.close()


def test_each_caller_gets_its_own_request_id_back(client: Client) -> None:
    request = _request("identity", _unique())
    request.id = "first"
    assert client.call(request)[0].id == "first"
    request.id = "second"
    hit, trailing = client.call(request)
    assert (hit.id, trailing["x-cache"]) == ("second", "hit-l1")
    request.id = ""
    assert client.call(request)[0].id == ""


def test_100_concurrent_identical_misses_execute_once(cached: GatewayProcess, triton: TritonCli) -> None:
    values = _unique()
    before = _direct_count(triton)

    async def burst() -> list[int]:
        async with aioclient.InferenceServerClient(cached.address) as aio:
            results = await asyncio.gather(
                *(aio.infer("counter", infer_inputs({"INPUT0": values})) for _ in range(100))
            )
        return [int(r.as_numpy("COUNT")[0]) for r in results]

    counts = asyncio.run(burst())
    assert set(counts) == {before + 1}
    assert _direct_count(triton) == before + 2


def test_no_cache_and_no_store(client: Client, triton: TritonCli) -> None:
    request = _request("counter", _unique())
    first, _ = client.call(request)
    fresh, trailing = client.call(request, cache_control="no-cache")
    assert trailing["x-cache"] == "miss" and _count(fresh) > _count(first)  # it ran again ...
    assert _count(client.call(request)[0]) == _count(fresh)  # ... and its answer was stored
    unstored = _request("counter", _unique())
    assert client.call(unstored, cache_control="no-store")[1]["x-cache"] == "miss"
    assert client.call(unstored)[1]["x-cache"] == "miss"


def test_errors_are_not_stored(client: Client, cached: GatewayProcess) -> None:
    admin = Admin(cached.admin_address)
    stores = admin.stub.GetCacheStats(apb.GetCacheStatsRequest(), metadata=AUTH).stores
    failing = _request("flaky", _unique(), FAIL=np.array([True]))
    for _ in range(2):
        with pytest.raises(Exception, match="failure requested"):
            client.call(failing)
    assert admin.stub.GetCacheStats(apb.GetCacheStatsRequest(), metadata=AUTH).stores == stores
    admin.close()


def test_invalidate_by_model_through_the_admin_api(client: Client, cached: GatewayProcess) -> None:
    request = _request("identity", _unique())
    client.call(request)
    assert client.call(request)[1]["x-cache"] == "hit-l1"
    admin = Admin(cached.admin_address)
    removed = admin.stub.InvalidateCache(apb.InvalidateCacheRequest(model="identity"), metadata=AUTH).removed
    assert removed >= 2  # its L1 and L2 entries
    assert client.call(request)[1]["x-cache"] == "miss"
    admin.close()


def test_cache_off_is_bypass(gateway: GatewayProcess) -> None:
    plain = Client(gateway.address)
    assert plain.call(_request("identity", _unique()))[1]["x-cache"] == "bypass"
    plain.close()


def test_ttl_expiry_in_both_tiers(triton: TritonCli, redis_server: RedisServer, tmp_path: Path) -> None:
    with _cached_gateway(triton, redis_server, tmp_path / "gateway.log", "--cache-ttl", "1") as gateway:
        ttl_client = Client(gateway.address)
        request = _request("identity", _unique())
        assert [ttl_client.call(request)[1]["x-cache"] for _ in range(2)] == ["miss", "hit-l1"]
        time.sleep(1.3)
        assert ttl_client.call(request)[1]["x-cache"] == "miss"  # not hit-l2 either: Redis expired it too
        ttl_client.close()


@contextmanager
def _config_gateway(triton: TritonCli, tmp_path: Path, cache: dict[str, object]) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:0",
        "pools": {"main": {"endpoints": [triton.address]}},
        "default_pool": "main",
        "cache": {"enabled": True, **cache},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        yield gateway


def test_lru_byte_bound_evicts_the_oldest(triton: TritonCli, tmp_path: Path) -> None:
    """identity with 256 floats answers ~1.1 KB: a 3,500-byte tier holds three."""
    with _config_gateway(triton, tmp_path, {"l1_max_bytes": 3500, "tiers": ["l1"]}) as gateway:
        bounded = Client(gateway.address)
        requests = [_request("identity", _unique(256)) for _ in range(5)]
        for request in requests:
            bounded.call(request)
        stats = Admin(gateway.admin_address).stub.GetCacheStats(apb.GetCacheStatsRequest(), metadata=AUTH)
        assert (stats.l1_entries, stats.evictions) == (3, 2) and stats.l1_bytes <= 3500
        assert bounded.call(requests[-1])[1]["x-cache"] == "hit-l1"
        assert bounded.call(requests[0])[1]["x-cache"] == "miss"
        bounded.close()


def _load(
    address: str,
    requests: list[pb.ModelInferRequest],
    stop: threading.Event,
    outcomes: list[str],
    failures: list[Exception],
) -> None:
    loader = Client(address)
    while not stop.is_set():
        for request in requests:
            try:
                outcomes.append(loader.call(request)[1]["x-cache"])
            except Exception as exc:  # every failure is a finding
                failures.append(exc)
    loader.close()


def test_redis_killed_mid_load_fails_nothing_and_hits_resume(triton: TritonCli, tmp_path: Path) -> None:
    """Tier 2 only, so every hit comes from Redis. Kill it under load: no request fails; restart it:
    hits come back once the breaker's back-off lets a probe through."""
    with (
        running_redis(tmp_path) as redis,
        _config_gateway(triton, tmp_path, {"redis_url": redis.url, "tiers": ["l2"]}) as gateway,
    ):
        requests = [_request("identity", _unique()) for _ in range(20)]
        failures: list[Exception] = []
        outcomes: list[str] = []
        stop = threading.Event()
        load = functools.partial(_load, gateway.address, requests, stop, outcomes, failures)
        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(1.0)
        assert "hit-l2" in outcomes
        redis.kill()
        killed_at = len(outcomes)
        time.sleep(1.5)
        restarted_at = len(outcomes)
        redis.start()  # same port, empty
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "hit-l2" not in outcomes[restarted_at:]:
            time.sleep(0.1)
        stop.set()
        worker.join(30)
        assert failures == []
        assert "hit-l2" not in outcomes[killed_at + 1 : restarted_at]  # one may have been under way
        assert "hit-l2" in outcomes[restarted_at:]
        stats = Admin(gateway.admin_address).stub.GetCacheStats(apb.GetCacheStatsRequest(), metadata=AUTH)
        assert stats.l2_errors > 0 and stats.l2_skipped > 0


def test_gatewayctl_cache_stats_and_invalidate(cached: GatewayProcess) -> None:
    ctl = str(Path(sys.executable).parent / "gatewayctl")
    where = ["--admin", cached.admin_address, "--token", TOKEN]
    shown = subprocess.run([ctl, "cache-stats", *where], capture_output=True, text=True, check=True).stdout
    assert "hits" in shown and "breaker closed" in shown
    flushed = subprocess.run([ctl, "invalidate", "--all", *where, "--json"], capture_output=True, text=True, check=True)
    assert '"removed"' in flushed.stdout or flushed.stdout.strip() == "{}"
    refused = subprocess.run([ctl, "invalidate", *where], capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "--all" in refused.stderr  # a usage error, before any call


def _identity_statistics(address: str) -> pb.ModelStatistics:
    channel = Client(address)
    try:
        answer = channel.stub.ModelStatistics(pb.ModelStatisticsRequest(name="identity"), timeout=10)
    finally:
        channel.close()
    (entry,) = [entry for entry in answer.model_stats if entry.version == "1"]
    return entry


def test_hits_show_in_model_statistics_as_tritons_own_cache_would(
    client: Client, cached: GatewayProcess, triton: TritonCli
) -> None:
    """perf_analyzer and dashboards read ModelStatistics: hits count as successful inferences
    that hit the cache (no execution), and the config says the model's responses are cached."""
    request = _request("identity", _unique(16))
    client.call(request)  # a miss: Triton executes it
    before = _identity_statistics(cached.address)
    for _ in range(5):
        assert client.call(request)[1]["x-cache"] == "hit-l1"
    after = _identity_statistics(cached.address)
    assert after.inference_stats.cache_hit.count - before.inference_stats.cache_hit.count == 5
    assert after.inference_stats.success.count - before.inference_stats.success.count == 5
    assert after.inference_count - before.inference_count == 5
    assert after.execution_count == before.execution_count
    direct = _identity_statistics(triton.address)
    assert direct.inference_stats.cache_hit.count == 0  # Triton's own numbers are left alone
    config = client.stub.ModelConfig(pb.ModelConfigRequest(name="identity"), timeout=10).config
    assert config.response_cache.enable


def test_without_the_cache_the_config_says_no_response_cache(gateway: GatewayProcess) -> None:
    plain = Client(gateway.address)
    try:
        config = plain.stub.ModelConfig(pb.ModelConfigRequest(name="identity"), timeout=10).config
    finally:
        plain.close()
    assert not config.response_cache.enable
