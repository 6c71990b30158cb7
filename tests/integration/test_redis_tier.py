"""The core's Redis tier against a real redis-server, through real gateways: compression, TTL,
the versioned namespace, invalidation by model, and a Redis that is down from the start."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import redis
import yaml
from tritonclient.grpc import service_pb2 as pb

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.redis_server import RedisServer, running_redis
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client

NAMESPACE = "tier-test:"


def _request(model: str, size: int, fill: float) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[size])
        request.raw_input_contents.append(np.full(size, fill, np.float32).tobytes())
    return request


@contextmanager
def _gateway(triton: TritonCli, redis_url: str, tmp_path: Path, name: str, compress: bool) -> Iterator[GatewayProcess]:
    config = {
        "pools": {"triton": {"endpoints": [triton.address]}},
        "default_pool": "triton",
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "cache": {"enabled": True, "redis_url": redis_url, "namespace": NAMESPACE, "compress": compress, "ttl_s": 60},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / f"{name}.log") as gateway:
        yield gateway


def _stored(server: RedisServer, model: str, timeout_s: float = 5.0) -> list[bytes]:
    """The model's keys in Redis, once the gateway's background write has landed."""
    raw = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            keys = sorted(raw.scan_iter(match=f"{NAMESPACE}*|{model}|*"))
            if keys or time.monotonic() > deadline:
                return keys
            time.sleep(0.05)
    finally:
        raw.close()


def test_compressed_entries_are_stored_small_with_their_ttl_and_read_by_a_replica(
    triton: TritonCli, tmp_path: Path
) -> None:
    with (
        running_redis(tmp_path) as server,
        _gateway(triton, server.url, tmp_path, "writer", compress=True) as writer,
        _gateway(triton, server.url, tmp_path, "reader", compress=False) as reader,
    ):
        request = _request("add_sub_fp32", 10_000, 0.0)
        first = Client(writer.address)
        answer, trailing = first.call(request)
        assert trailing["x-cache"] == "miss"
        keys = _stored(server, "add_sub_fp32")
        assert len(keys) == 1
        key = keys[0].decode()
        assert key.startswith(f"{NAMESPACE}n1|add_sub_fp32|")  # the core's own, versioned key format
        raw = redis.Redis.from_url(server.url)
        stored = raw.get(key)
        assert stored is not None and stored[:1] == b"l"  # lz4, with its marker
        assert len(stored) < answer.ByteSize() // 20  # 80 kB of zeros
        assert 0 < raw.pttl(key) <= 60_000

        second = Client(reader.address)  # a replica that does not compress still reads the entry
        again, trailing = second.call(request)
        assert trailing["x-cache"] == "hit-l2"
        assert again.raw_output_contents == answer.raw_output_contents

        other = _request("add_sub", 4, 1.0)
        other.inputs[0].datatype = other.inputs[1].datatype = "INT32"
        other.raw_input_contents[:] = [np.ones(4, np.int32).tobytes()] * 2
        first.call(other)
        assert _stored(server, "add_sub")
        admin = Admin(writer.admin_address)
        removed = admin.stub.InvalidateCache(
            apb.InvalidateCacheRequest(model="add_sub_fp32"), metadata=AUTH, timeout=10
        )
        assert removed.removed >= 1
        assert _stored(server, "add_sub_fp32", timeout_s=0) == []
        assert _stored(server, "add_sub", timeout_s=0)  # another model's entry stays
        raw.close()
        admin.close()
        for client in (first, second):
            client.close()


def test_a_redis_that_is_down_from_the_start_leaves_the_cache_in_process(triton: TritonCli, tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _gateway(triton, dead, tmp_path, "alone", compress=False) as gateway:
        client = Client(gateway.address)
        request = _request("add_sub_fp32", 16, 2.0)
        outcomes = [client.call(request)[1]["x-cache"] for _ in range(20)]
        assert outcomes[0] == "miss" and set(outcomes[1:]) == {"hit-l1"}
        client.close()
