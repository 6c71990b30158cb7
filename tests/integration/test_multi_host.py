"""Past one box (issue 22, part 4): hosts in network namespaces on one machine (tests/netbed.py).

A DNS host running dnsmasq answers `triton-headless` with the Triton hosts and `gateways` with the
gateway hosts; three Triton hosts; a Redis host on the back LAN only; gateway hosts on the front LAN
(clients, Tritons, DNS) and, when they share Redis, the back LAN too, so Redis can be cut off from
one gateway while it keeps serving. The faults are the real ones: a switch port set down (a
partition), SIGSTOP (a frozen host), SIGKILL (a dead one)."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.triton import DEFAULT_MODEL_REPOSITORY
from gateway_admin import admin_pb2 as apb
from tests.netbed import BACK, FRONT, Host, NetBed, running_bed
from tests.procs import dnsmasq_command
from tests.traffic import AUTH, TOKEN, Admin, ClosedLoad, identity_request, identity_served, until

TRITONS = "triton-headless"
GATEWAYS = "gateways"
TRITON_PORT = 8001
REDIS_PORT = 6379
INTERVAL_S = 0.5  # DNS re-resolution and health checks
LEASE_S = 2.0

# What a resilient client of a replicated gateway configures (gRPC's own knobs, nothing of ours):
# round_robin over every address of the name, HTTP/2 keepalive pings that find a frozen peer, and
# retries of UNAVAILABLE (inference is idempotent).
CLIENT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.service_config", json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{"name": [{"service": "inference.GRPCInferenceService"}], "retryPolicy": {
            "maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "0.5s", "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]}}],
    })),
    ("grpc.keepalive_time_ms", 1000),
    ("grpc.keepalive_timeout_ms", 1000),
    ("grpc.http2.ping_timeout_ms", 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]  # fmt: skip


@dataclass
class Bed:
    net: NetBed
    dns: Host
    hosts_file: Path
    dnsmasq: Any
    tritons: list[Host]
    redis: Host
    workdir: Path
    names: dict[str, list[Host]] = field(default_factory=dict)

    def serve(self, name: str, hosts: list[Host]) -> None:
        """`name` answers with these hosts' front addresses from now on (dnsmasq re-reads on SIGHUP)."""
        self.names[name] = hosts
        self.hosts_file.write_text("".join(f"{h.address} {n}\n" for n, hs in self.names.items() for h in hs))
        self.dnsmasq.send_signal(signal.SIGHUP)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis.addresses[BACK]}:{REDIS_PORT}/0"

    def gateways_target(self) -> str:
        """The gRPC target a client uses for every gateway: the name, resolved by the bed's DNS."""
        return f"dns://{self.dns.address}:53/{GATEWAYS}:8001"


def _ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    workdir = tmp_path_factory.mktemp("netbed")
    repository = workdir / "models"
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "identity", repository / "identity")
    with running_bed() as net:
        dns = net.add_host("dns")
        hosts_file = workdir / "dns-hosts"
        hosts_file.write_text("")
        dnsmasq = dns.popen(dnsmasq_command(hosts_file, dns.address, 53), workdir / "dnsmasq.log")
        tritons = [net.add_host(f"triton{i}") for i in range(3)]
        for triton in tritons:
            triton.popen([sys.executable, "-m", "gateway", "triton", "--address", triton.address, "--grpc-port",
                          str(TRITON_PORT), "--model-repository", str(repository)],
                         workdir / f"{triton.name}.log")  # fmt: skip
        redis = net.add_host("redis", lans=(BACK,))
        redis_command = ["redis-server", "--port", str(REDIS_PORT), "--bind", redis.addresses[BACK], "--dir",
                         str(workdir), "--protected-mode", "no", "--save", "", "--appendonly", "no"]  # fmt: skip
        redis.popen(redis_command, workdir / "redis.log")
        for triton in tritons:
            waited = until(lambda t=triton: _ready(f"{t.address}:{TRITON_PORT}"), 120)  # type: ignore[misc]
            assert waited < 120, (workdir / f"{triton.name}.log").read_text()[-2000:]
        yield Bed(net, dns, hosts_file, dnsmasq, tritons, redis, workdir)


def _gateway(bed: Bed, name: str, shared: bool = False, **pool: Any) -> Host:
    """A gateway host serving on its front address, port 8001 (admin 8002), its pool the Tritons
    behind `dns:triton-headless:8001`. `shared`: on the back LAN too, its routes, rollouts, audit
    trail and cache's second tier in the bed's Redis, the route `identity` with variants a and b."""
    host = bed.net.add_host(name, lans=(FRONT, BACK) if shared else (FRONT,))
    config: dict[str, Any] = {
        "listen": f"{host.address}:8001",
        "pools": {
            "main": {
                "endpoints": [f"dns:{TRITONS}:{TRITON_PORT}"],
                "dns_resolver": f"{bed.dns.address}:53",
                "dns_refresh_s": INTERVAL_S,
                **pool,
            }
        },
        "default_pool": "main",
        "health_check_interval_s": INTERVAL_S,
        "admin": {"listen": f"{host.address}:8002", "token": TOKEN},
    }
    if shared:
        variants = [{"name": v, "pool": "main", "model": "identity", "weight": w} for v, w in (("a", 100), ("b", 0))]
        config |= {
            "routes": {"identity": {"variants": variants}},
            "shared": {"redis_url": bed.redis_url},
            "cache": {"enabled": True, "redis_url": bed.redis_url},
            "rollouts": {"tick_s": 0.2, "lease_s": LEASE_S},
            "audit": {"path": str(bed.workdir / f"{name}-audit.jsonl")},
        }
    path = bed.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    host.popen([sys.executable, "-m", "gateway", "serve", "--config", str(path)], bed.workdir / f"{name}.log")
    waited = until(lambda: _ready(f"{host.address}:8001"), 60)
    assert waited < 60, (bed.workdir / f"{name}.log").read_text()[-2000:]
    return host


def _admin(gateway: Host) -> Admin:
    return Admin(f"{gateway.address}:8002")


def _pool(gateway: Host) -> apb.PoolStats:
    admin = _admin(gateway)
    try:
        return admin.stub.GetPoolStats(apb.GetPoolStatsRequest(), metadata=AUTH, timeout=5).pools[0]
    finally:
        admin.close()


def _endpoint(gateway: Host, triton: Host) -> apb.EndpointStats:
    address = f"{triton.address}:{TRITON_PORT}"
    return next(e for e in _pool(gateway).endpoints if e.address == address)


def _served(tritons: list[Host]) -> list[int]:
    return [identity_served(f"{t.address}:{TRITON_PORT}") for t in tritons]


def _idle(triton: Host) -> bool:
    """Whether the Triton served nothing for a quarter of a second."""
    before = _served([triton])[0]
    time.sleep(0.25)
    return _served([triton])[0] == before


def test_tritons_behind_one_name_across_hosts_share_the_load_and_follow_dns(bed: Bed) -> None:
    first, second, third = bed.tritons
    bed.serve(TRITONS, [first, second])
    # Equal shares are round_robin's (least_request, the default, gives the faster endpoint more:
    # these Tritons share this box's two cores with each other and the load).
    gateway = _gateway(bed, "gw-dns", lb_policy="round_robin")
    both = until(lambda: sum(e.ready for e in _pool(gateway).endpoints) == 2, 10)
    assert both < 10, _pool(gateway)
    before = _served(bed.tritons)
    with ClosedLoad(f"{gateway.address}:8001") as load:
        time.sleep(4)
        spread = [now - then for now, then in zip(_served(bed.tritons), before, strict=True)]
        total = spread[0] + spread[1]
        assert total > 50 and spread[2] == 0, spread
        shares = [spread[0] / total, spread[1] / total]
        assert all(abs(share - 0.5) <= 0.05 for share in shares), spread  # one ClusterIP connection: 100/0

        bed.serve(TRITONS, [first, second, third])
        grown = _served([third])[0]
        took = until(lambda: _served([third])[0] > grown, 10)
        assert took <= 4 * INTERVAL_S + 1.0, took

        bed.serve(TRITONS, [second, third])
        drained = until(lambda: _idle(first), 10)  # resolved again, its requests under way finished
        assert drained <= 4 * INTERVAL_S + 1.0, drained
        last = _served([first])[0]
        time.sleep(1.0)
        assert _served([first])[0] == last  # and none since
    assert load.sent > 200 and load.failed == [], load.failed[:5]
    print(
        f"\nshares {shares[0]:.2f}/{shares[1]:.2f} of {total}; the added host took traffic after {took:.2f}s, "
        f"the removed one served its last {drained:.2f}s after leaving DNS"
    )
    gateway.kill()


def test_a_triton_host_partitioned_under_load_is_ejected_and_its_share_moves(bed: Bed) -> None:
    bed.serve(TRITONS, bed.tritons)
    # A hedge after 200 ms is what takes the requests caught on the cut host elsewhere (Envoy's
    # per-try timeout); hedges and retries come out of the pool's retry budget.
    gateway = _gateway(bed, "gw-part", hedge_delay_ms=200)
    assert until(lambda: sum(e.ready for e in _pool(gateway).endpoints) == 3, 10) < 10, _pool(gateway)
    cut, *others = bed.tritons
    with ClosedLoad(f"{gateway.address}:8001") as load:
        time.sleep(1.5)
        before, pool_before = _served(others), _pool(gateway)
        bed.net.partition(cut)
        partitioned = time.monotonic()
        ejected = until(lambda: not _endpoint(gateway, cut).ready or _endpoint(gateway, cut).ejected, 10)
        assert ejected < 10, _endpoint(gateway, cut)
        time.sleep(2)
        moved = [now - then for now, then in zip(_served(others), before, strict=True)]
        at_move = _pool(gateway)
        bed.net.heal(cut)
        back = until(lambda: _endpoint(gateway, cut).ready and not _endpoint(gateway, cut).ejected, 20)
        assert back < 20, _endpoint(gateway, cut)
        rejoined = _served([cut])[0]
        took_again = until(lambda: _served([cut])[0] > rejoined, 10)
        assert took_again < 10
    after = _pool(gateway)
    denied = after.retries_denied - pool_before.retries_denied
    hedges = after.hedges - pool_before.hedges
    assert all(m > 0 for m in moved), (moved, at_move)  # the others carried the cut host's share
    # Requests caught on the cut host are hedged elsewhere while the budget allows; those whose
    # hedge it refused wait for that host (and fail when its connection breaks): no more fail.
    assert len(load.failed) <= denied, (load.failed[:5], denied)
    cut_for = time.monotonic() - partitioned
    print(f"\nTriton partitioned: unready after {ejected:.2f}s; {load.sent} sent, {len(load.failed)} failed, "
          f"{hedges} hedged, {denied} retries refused by the budget; the others served {moved} in the next 2 s "
          f"(cut {cut_for:.1f}s); back and serving {back + took_again:.2f}s after the heal")  # fmt: skip
    gateway.kill()


def _distinct(i: int) -> pb.ModelInferRequest:
    return identity_request(np.array([i, i + 1, i + 2, i + 3], np.float32))


def _weights(admin: Admin) -> dict[str, int]:
    return {v.name: v.weight for v in admin.routes("identity").routes[0].variants}


def test_redis_partitioned_from_one_gateway_fails_open_and_its_routes_catch_up_after_the_heal(bed: Bed) -> None:
    bed.serve(TRITONS, bed.tritons)
    cut_off, other = _gateway(bed, "gw-r1", shared=True), _gateway(bed, "gw-r2", shared=True)
    admin_cut, admin_other = _admin(cut_off), _admin(other)
    with grpc.insecure_channel(f"{cut_off.address}:8001") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i in range(20):  # stored in both tiers
            stub.ModelInfer(_distinct(i), timeout=10)
        bed.net.partition(cut_off, BACK)
        admin_other.set_weights("identity", a=60, b=40)  # made on the other gateway while cut off
        slowest = 0.0
        for i in range(100, 300):  # misses: each looks in Redis first, then asks Triton
            started = time.monotonic()
            stub.ModelInfer(_distinct(i), timeout=10)
            slowest = max(slowest, time.monotonic() - started)
        for i in range(20):  # hits of the in-process tier, Redis unreachable or not
            stub.ModelInfer(_distinct(i), timeout=10)
        stats = admin_cut.stub.GetCacheStats(apb.GetCacheStatsRequest(), metadata=AUTH, timeout=5)
        assert _weights(admin_cut) == {"a": 100, "b": 0}  # nothing reached it yet
        bed.net.heal(cut_off, BACK)
        caught_up = until(lambda: _weights(admin_cut) == {"a": 60, "b": 40}, 30)
    # Redis' timeout is 50 ms and its breaker opens after a few failures: nothing waits much longer.
    assert slowest < 2.0, slowest
    assert stats.redis_breaker in ("open", "half-open") and stats.l2_errors > 0, stats
    assert stats.hits_l1 >= 20, stats
    assert caught_up < 30, caught_up
    print(f"\nRedis cut from one gateway: 200 misses and 20 hits served, slowest {slowest * 1000:.0f} ms, "
          f"{stats.l2_errors} Redis errors, {stats.l2_skipped} skipped by the breaker; the route change made "
          f"meanwhile arrived {caught_up:.2f}s after the heal")  # fmt: skip
    for gateway in (cut_off, other):
        gateway.kill()


def test_a_frozen_gateway_host_behind_round_robin_loses_no_request(bed: Bed) -> None:
    bed.serve(TRITONS, bed.tritons)
    gateways = [_gateway(bed, "gw-f1"), _gateway(bed, "gw-f2")]
    bed.serve(GATEWAYS, gateways)
    frozen, alive = gateways
    with ClosedLoad(bed.gateways_target(), options=CLIENT_OPTIONS) as load:
        assert until(lambda: all(_pool(g).attempts > 20 for g in gateways), 10) < 10  # both serve
        frozen.freeze()
        sent_before, attempts_before = load.sent, _pool(alive).attempts
        time.sleep(5)
        during = load.sent - sent_before
        carried = _pool(alive).attempts - attempts_before
        frozen.thaw()
        time.sleep(2)
    assert load.failed == [], load.failed[:5]
    # The two counts are read a moment apart: a call the load had in flight (one per thread) may be
    # counted by the gateway before the first reading and completed by the client after it.
    assert during > 100 and carried >= during - load.threads, (during, carried)
    print(
        f"\nOne gateway frozen for 5 s: {during} requests completed through the other meanwhile, "
        f"{load.sent} sent in all, {len(load.failed)} failed"
    )
    for gateway in gateways:
        gateway.kill()


def _leading(admin: Admin) -> bool:
    listed = admin.stub.ListRollouts(apb.ListRolloutsRequest(), metadata=AUTH, timeout=5)
    return bool(listed.rollouts and listed.rollouts[0].leading)


def _rollout(admin: Admin) -> apb.RolloutStatus:
    return admin.stub.GetRollout(apb.GetRolloutRequest(model="identity"), metadata=AUTH, timeout=5)


def test_the_gateway_host_leading_a_rollout_killed_mid_rollout_the_other_carries_it_on(bed: Bed) -> None:
    bed.serve(TRITONS, bed.tritons)
    gateways = [_gateway(bed, "gw-l1", shared=True), _gateway(bed, "gw-l2", shared=True)]
    bed.serve(GATEWAYS, gateways)
    admins = [_admin(g) for g in gateways]
    spec = apb.RolloutSpec(model="identity", candidate="b", baseline="a", steps=[20, 50], interval_s=2,
                           min_requests=20)  # fmt: skip
    with ClosedLoad(bed.gateways_target(), options=CLIENT_OPTIONS) as load:
        admins[0].stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
        assert until(lambda: _weights(admins[1]).get("b") == 20, 10) < 10, _rollout(admins[1])
        assert until(lambda: any(_leading(a) for a in admins), 5) < 5
        leader = next(i for i, a in enumerate(admins) if _leading(a))
        survivor = admins[1 - leader]
        gateways[leader].kill()
        killed = time.monotonic()
        took_over = until(lambda: _leading(survivor), 3 * LEASE_S + 5)
        assert took_over < 3 * LEASE_S + 5, _rollout(survivor)
        done = until(lambda: _rollout(survivor).phase == "Succeeded", 60)
        status = _rollout(survivor)
    assert done < 60, status
    assert _weights(survivor) == {"a": 0, "b": 100}
    trail = survivor.stub.GetAudit(apb.GetAuditRequest(model="identity", verify=True), metadata=AUTH, timeout=10)
    assert trail.verified and trail.verified_count == len(trail.records), trail.broken_reason
    actions = [r.action for r in trail.records]
    assert actions.count("rollout.start") == 1 and "rollout.transition" in actions
    assert load.failed == [], load.failed[:5]  # the client's retries took it to the survivor
    print(f"\nLeader killed mid-rollout: the other leads {took_over:.2f}s later (lease {LEASE_S}s) and promoted "
          f"{time.monotonic() - killed:.1f}s after the kill; audit chain of {len(trail.records)} records verifies; "
          f"{load.sent} requests, {len(load.failed)} failed")  # fmt: skip
    gateways[1 - leader].kill()
