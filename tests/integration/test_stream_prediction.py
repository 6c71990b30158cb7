"""`gateway stream` against a real Redis, through a real gateway to a real Triton: every input
gets exactly one output (a consumer killed midway included), failures land in the dead-letter
stream with their reason, and a gateway that sheds slows the consumers without losing anything."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import redis

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.redis_server import RedisServer, running_redis
from gateway_admin import admin_pb2 as apb
from gateway_admin import admin_pb2_grpc
from tests.procs import running_gateway
from tests.traffic import AUTH, TOKEN, sample_value, scrape_metrics

MODEL = "identity_batched"  # echoes INPUT0, batches up to 64 rows


@contextmanager
def _consumer(name: str, server: RedisServer, target: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "gateway", "stream", "--model", MODEL, "--input", "readings", "--output",
               "predictions", "--redis", server.url, "--target", target, "--consumer", name, "--from-start",
               "--claim-idle-ms", "2000", *extra]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _produce(client: redis.Redis, values: list[object], stream: str = "readings") -> list[str]:
    pipe = client.pipeline(transaction=False)
    for value in values:
        pipe.xadd(stream, {"inputs": value if isinstance(value, str) else json.dumps(value), "sensor": "s1"})
    return [entry_id.decode() for entry_id in pipe.execute()]


def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _pending(client: redis.Redis) -> int:
    return int(client.xpending("readings", "gateway")["pending"])


def _outputs(client: redis.Redis, stream: str = "predictions") -> list[dict[bytes, bytes]]:
    entries: Any = client.xrange(stream)
    return [fields for _, fields in entries]


def test_every_input_gets_exactly_one_output_though_a_consumer_is_killed(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        ids = _produce(client, [{"INPUT0": [float(i), float(i) + 0.5]} for i in range(20_000)])
        with (
            _consumer("c1", server, gateway.address, tmp_path / "c1.log") as first,
            _consumer("c2", server, gateway.address, tmp_path / "c2.log"),
        ):
            _until(lambda: client.xlen("predictions") >= 5_000, 120, "a quarter of the outputs")
            first.kill()  # SIGKILL midway: its pending entries are claimed by c2
            first.wait()
            _until(lambda: client.xlen("predictions") >= 20_000 and _pending(client) == 0, 180,
                   "every output, nothing pending")  # fmt: skip
        outputs = _outputs(client)
        answered = [fields[b"input_id"].decode() for fields in outputs]
        assert len(answered) == 20_000 and set(answered) == set(ids), "exactly one output per input"
        inputs = {entry_id: i for i, entry_id in enumerate(ids)}
        for fields in outputs:
            i = inputs[fields[b"input_id"].decode()]
            assert json.loads(fields[b"outputs"]) == {"OUTPUT0": [float(i), float(i) + 0.5]}
            assert fields[b"sensor"] == b"s1"
        assert client.xlen("readings:dead") == 0
        assert client.xinfo_groups("readings")[0]["lag"] == 0


def test_entries_that_fail_for_good_are_dead_lettered_with_their_reason(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    with running_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        good = [{"INPUT0": [1.0, 2.0]}] * 5
        bad = ["{not json", {"NOPE": [1.0]}, {"INPUT0": ["a", "b"]}]
        ids = _produce(client, [*good, *bad])
        with _consumer("c1", server, gateway.address, tmp_path / "c1.log"):
            _until(lambda: client.xlen("predictions") + client.xlen("readings:dead") >= 8 and _pending(client) == 0,
                   60, "every entry answered")  # fmt: skip
        assert client.xlen("predictions") == 5
        dead = {fields[b"input_id"].decode(): fields for fields in _outputs(client, "readings:dead")}
        assert set(dead) == set(ids[5:])
        assert all(fields[b"code"] == b"INVALID_ARGUMENT" for fields in dead.values())
        reasons = [dead[entry_id][b"message"].decode() for entry_id in ids[5:]]
        assert "not JSON" in reasons[0] and "'NOPE' is not one of the model's" in reasons[1], reasons
        assert dead[ids[7]][b"inputs"] == b'{"INPUT0": ["a", "b"]}'  # the input kept for a person


def test_a_consumer_restarted_under_its_name_takes_its_own_pending_entries_once(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """Entries delivered to `c1` before it died unacknowledged are its first work when it comes
    back under that name: each read once (not the same pending ones again while under way)."""
    with running_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        _produce(client, [{"INPUT0": [float(i)]} for i in range(300)])
        client.xgroup_create("readings", "gateway", id="0")
        client.xreadgroup("gateway", "c1", {"readings": ">"}, count=300)  # delivered, never acknowledged
        port = free_port()
        with _consumer("c1", server, gateway.address, tmp_path / "c1.log", "--metrics-port", str(port),
                       "--claim-idle-ms", "600000", "--block", "32"):  # fmt: skip
            _until(lambda: client.xlen("predictions") >= 300 and _pending(client) == 0, 60, "every output")
            consumed = sample_value(scrape_metrics(f"127.0.0.1:{port}"), "gateway_stream_consumed_total")
        assert consumed == 300
        assert client.xlen("predictions") == 300


def _shed(gateway: GatewayProcess) -> int:
    with grpc.insecure_channel(gateway.admin_address) as channel:
        stub = admin_pb2_grpc.GatewayAdminStub(channel)
        return int(stub.GetPoolStats(apb.GetPoolStatsRequest(), metadata=AUTH, timeout=5).pools[0].shed)


def test_a_gateway_that_sheds_slows_the_consumers_and_loses_nothing(triton: object, tmp_path: Path) -> None:
    address = triton.address  # type: ignore[attr-defined]
    args = ["--upstream", address, "--max-inflight", "1", "--max-queue", "0", "--admin-port", "0",
            "--admin-token", TOKEN]  # fmt: skip
    with running_gateway(args, tmp_path / "gateway.log") as narrow, running_redis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        ids = _produce(client, [{"INPUT0": [float(i)]} for i in range(600)])
        with _consumer("c1", server, narrow.address, tmp_path / "c1.log", "--concurrency", "8",
                       "--rows-per-request", "1"):  # fmt: skip
            _until(lambda: client.xlen("predictions") >= 600 and _pending(client) == 0, 120, "every output")
        answered = [fields[b"input_id"].decode() for fields in _outputs(client)]
        assert sorted(answered) == sorted(ids)
        assert client.xlen("readings:dead") == 0
        assert _shed(narrow) > 0  # it did shed: the consumer backed off and sent again
