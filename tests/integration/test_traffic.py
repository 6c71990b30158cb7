"""Per-request routing through a real gateway to Triton's classifier v1 and v2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.samples import digits, infer_inputs
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request, versions_route

PIXELS = digits()["pixels"]
GATEWAYCTL = str(Path(sys.executable).parent / "gatewayctl")  # the installed console script


@pytest.fixture(scope="module")
def routed(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("routed") / "gateway.log"
    args = ["--upstream", triton.address, "--admin-port", "0", "--admin-token", TOKEN]
    with running_gateway(args, log) as gateway:
        yield gateway


@pytest.fixture
def admin(routed: GatewayProcess) -> Iterator[Admin]:
    client = Admin(routed.admin_address)
    yield client
    client.close()


@pytest.fixture
def client(routed: GatewayProcess) -> Iterator[Client]:
    channel = Client(routed.address)
    yield channel
    channel.close()


def test_zero_config_route_has_every_version_with_the_latest_weighted(admin: Admin) -> None:
    (route,) = admin.routes("classifier").routes
    assert [(v.name, v.version, v.weight) for v in route.variants] == [("1", "1", 0), ("2", "2", 100)]
    assert route.discovered


def test_admin_calls_on_a_model_no_pool_serves_are_not_found(admin: Admin) -> None:
    """The admin API looks the route up through the core, as a request would: no route and no
    ready version of it in the default pool is NOT_FOUND, naming the pool."""
    for call in (lambda: admin.routes("no_such_model"), lambda: admin.set_weights("no_such_model", a=1)):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "unknown model 'no_such_model': pool 'default' serves no ready version of it" in str(
            caught.value.details()
        )


def test_90_10_split_over_2000_requests(admin: Admin, client: Client) -> None:
    """v2's count is Binomial(2000, 0.1): mean 200, sd 13.4; ±60 is ±4.5 sd (two-sided p ≈ 7e-6)."""
    admin.set_route(versions_route("classifier", {"1": 90, "2": 10}))
    request = digit_request(PIXELS[0])
    counts: Counter[str] = Counter()
    for _ in range(2000):
        response, variant = client.infer(request)
        assert response.model_version == variant
        counts[variant] += 1
    sd = math.sqrt(2000 * 0.1 * 0.9)
    assert abs(counts["2"] - 200) <= 4.5 * sd, counts


def test_header_match_overrides_weights(admin: Admin, client: Client) -> None:
    rule = apb.MatchRule(header="x-tenant", op=apb.MatchRule.EQUALS, values=["beta"], variant="2")
    admin.set_route(versions_route("classifier", {"1": 100, "2": 0}, rules=[rule]))
    request = digit_request(PIXELS[1])
    assert {client.infer(request, **{"x-tenant": "beta"})[1] for _ in range(30)} == {"2"}
    assert {client.infer(request, **{"x-tenant": "alpha"})[1] for _ in range(30)} == {"1"}
    assert {client.infer(request)[1] for _ in range(30)} == {"1"}


def test_sticky_keys_keep_their_variant_except_the_moved_share(admin: Admin, client: Client) -> None:
    """90/10 → 50/50: only keys on v1 move, and Binomial(400, 0.4) of them: ±4.5 sd = ±44."""
    admin.set_route(versions_route("classifier", {"1": 90, "2": 10}, sticky_header="x-user-id"))
    request = digit_request(PIXELS[2])
    users = [f"user-{i}" for i in range(400)]
    before = {u: client.infer(request, **{"x-user-id": u})[1] for u in users}
    assert all(client.infer(request, **{"x-user-id": u})[1] == before[u] for u in users[:50])
    admin.set_weights("classifier", **{"1": 50, "2": 50})
    after = {u: client.infer(request, **{"x-user-id": u})[1] for u in users}
    moved = [u for u in users if before[u] != after[u]]
    assert all(before[u] == "1" and after[u] == "2" for u in moved)
    assert abs(len(moved) - 160) <= 4.5 * math.sqrt(400 * 0.4 * 0.6)


def test_gatewayctl_weight_change_applies_on_an_open_channel(
    routed: GatewayProcess, admin: Admin, client: Client
) -> None:
    admin.set_route(versions_route("classifier", {"1": 0, "2": 100}))
    request = digit_request(PIXELS[3])
    assert {client.infer(request)[1] for _ in range(20)} == {"2"}
    command = [GATEWAYCTL, "set-weights", "classifier", "1=100", "2=0"]
    done = subprocess.run(
        [*command, "--admin", routed.admin_address, "--token", TOKEN], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stdout
    assert {client.infer(request)[1] for _ in range(20)} == {"1"}


def test_promote_and_rollback_with_gatewayctl(routed: GatewayProcess, admin: Admin, client: Client) -> None:
    admin.set_route(versions_route("classifier", {"1": 90, "2": 10}))
    ctl = [GATEWAYCTL]
    where = ["--admin", routed.admin_address, "--token", TOKEN, "--json"]
    subprocess.run([*ctl, "promote", "classifier", "2", *where], check=True, capture_output=True)
    assert {client.infer(digit_request(PIXELS[4]))[1] for _ in range(20)} == {"2"}
    subprocess.run([*ctl, "rollback", "classifier", *where], check=True, capture_output=True)
    (route,) = admin.routes("classifier").routes
    assert [v.weight for v in route.variants] == [90, 10]


def _wait_for_comparisons(admin: Admin, model: str, expected: int) -> apb.ShadowStats:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = admin.shadow_stats(model)
        if stats and stats[0].compared + stats[0].failed >= expected:
            return stats[0]
        time.sleep(0.1)
    raise AssertionError(f"shadow comparisons did not finish: {admin.shadow_stats(model)}")


def test_shadow_reports_the_known_v1_v2_disagreement(admin: Admin, client: Client) -> None:
    """Every held-out digit goes to v1 and is mirrored to v2: the argmax disagreement count
    equals the count computed offline from the two versions' predictions."""
    shadow = apb.ShadowPolicy(variant="2", fraction=1.0, max_inflight=1000)
    admin.set_route(versions_route("classifier", {"1": 100, "2": 0}, shadows=[shadow]))
    for pixels in PIXELS:
        assert client.infer(digit_request(pixels))[1] == "1"
    stats = _wait_for_comparisons(admin, "classifier", len(PIXELS))
    expected = int((digits()["class_v1"] != digits()["class_v2"]).sum())
    assert (stats.primary, stats.variant, stats.sent, stats.dropped, stats.failed) == ("1", "2", len(PIXELS), 0, 0)
    assert stats.argmax_compared == len(PIXELS)
    assert stats.argmax_disagreements == expected
    assert stats.exact_matches == 0 and stats.max_abs_error > 0


def test_slow_shadow_neither_delays_the_primary_nor_piles_up(admin: Admin, client: Client) -> None:
    """slow v1 takes 200 ms more than v2. Shadowing it (at most 2 in flight) leaves v2's latency
    where it was (a delay would add ~200 ms) and drops the copies that do not fit."""
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="DELAY_MS", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[5.0]], np.float32).tobytes())

    def p50(count: int) -> float:
        timings = []
        for _ in range(count):
            started = time.perf_counter()
            client.infer(request)
            timings.append(time.perf_counter() - started)
        return float(np.median(timings))

    admin.set_route(versions_route("slow", {"1": 0, "2": 100}))
    baseline = p50(15)
    shadow = apb.ShadowPolicy(variant="1", fraction=1.0, max_inflight=2)
    admin.set_route(versions_route("slow", {"1": 0, "2": 100}, shadows=[shadow]))
    shadowed = p50(30)
    assert shadowed < baseline + 0.1, (baseline, shadowed)
    stats = admin.shadow_stats("slow")[0]
    assert stats.sent + stats.dropped == 30 and stats.dropped > 0 and stats.sent >= 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.set_route(apb.Route(model="classifier", variants=[apb.Variant(name="x", pool="gpu", weight=1)])),
         "routes.classifier.variants.0.pool: unknown pool 'gpu'"),
        (lambda a: a.set_weights("classifier", **{"7": 10}), "routes.classifier.weights: unknown variant(s) ['7']"),
        (lambda a: a.set_weights("classifier", **{"1": 0, "2": 0}), "routes.classifier.variants: all weights are 0"),
        (lambda a: a.set_route(versions_route("classifier", {"1": 1}, shadows=[apb.ShadowPolicy(variant="9", fraction=1)])),  # noqa: E501
         "routes.classifier.shadows.0.variant: unknown variant '9'"),
    ],
    ids=["unknown-pool", "unknown-variant", "all-weights-zero", "unknown-shadow"],
)  # fmt: skip
def test_invalid_changes_are_rejected_and_the_table_is_unchanged(change, message: str, admin: Admin) -> None:  # type: ignore[no-untyped-def]
    admin.set_route(versions_route("classifier", {"1": 30, "2": 70}))
    before = admin.routes("classifier")
    with pytest.raises(grpc.RpcError) as caught:
        change(admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(caught.value.details())
    assert admin.routes("classifier") == before


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)])
def test_admin_needs_the_bearer_token(metadata: tuple[tuple[str, str], ...], admin: Admin) -> None:
    calls: list[Callable[[], object]] = [
        lambda: admin.stub.GetRoutes(apb.GetRoutesRequest(), metadata=metadata, timeout=5),
        lambda: next(iter(admin.stub.WatchEvents(apb.WatchEventsRequest(), metadata=metadata, timeout=5))),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_watch_events_streams_changes(admin: Admin) -> None:
    events = admin.stub.WatchEvents(apb.WatchEventsRequest(model="classifier"), metadata=AUTH, timeout=10)
    time.sleep(0.3)  # the watch is registered
    admin.set_weights("classifier", **{"1": 11, "2": 89})
    event = next(iter(events))
    events.cancel()
    assert event.kind == "weights" and [v.weight for v in event.route.variants] == [11, 89]


def test_stream_infer_follows_the_route(admin: Admin, routed: GatewayProcess) -> None:
    admin.set_route(versions_route("classifier", {"1": 100, "2": 0}))
    versions = []
    with grpcclient.InferenceServerClient(routed.address) as client:
        client.start_stream(callback=lambda result, error: versions.append(result.get_response().model_version))
        for pixels in PIXELS[:5]:
            client.async_stream_infer("classifier", infer_inputs({"INPUT0": pixels.astype(np.float32).reshape(1, 64)}))
        client.stop_stream()
    assert versions == ["1"] * 5


def _ctl(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEWAYCTL, *args], capture_output=True, text=True, check=False, timeout=30,
                          env={**os.environ, "COLUMNS": str(columns)})  # fmt: skip


def test_gatewayctl_errors_say_what_to_do(routed: GatewayProcess, client: Client) -> None:
    """Issue 27, finding 10: a missing token and a wrong one, an admin port nobody listens on, the
    data port instead of the admin port, errors under --json, invalidate without a model."""
    where = ["--admin", routed.admin_address]
    missing = _ctl(*where, "routes")
    assert missing.returncode == 1 and "missing bearer token" in missing.stderr and "--token" in missing.stderr
    wrong = _ctl(*where, "--token", "nope", "routes")
    assert wrong.returncode == 1 and "wrong bearer token" in wrong.stderr
    nobody = f"127.0.0.1:{free_port()}"
    down = _ctl("--admin", nobody, "--token", TOKEN, "routes")
    assert down.returncode == 1 and f"cannot reach the admin API at {nobody}" in down.stderr, down.stderr
    data_port = _ctl("--admin", routed.address, "--token", TOKEN, "routes")
    assert f"{routed.address} does not serve the admin API" in data_port.stderr and "data port" in data_port.stderr
    as_json = _ctl("--admin", nobody, "--token", TOKEN, "--json", "routes")
    error = json.loads(as_json.stderr)["error"]
    assert as_json.returncode == 1 and error["code"] == "UNAVAILABLE" and nobody in error["message"]
    unnamed = _ctl(*where, "--token", TOKEN, "invalidate")
    assert unnamed.returncode == 2 and "--all" in unnamed.stderr and "all=true" not in unnamed.stderr


def test_gatewayctl_tables_fit_80_columns_without_cutting_names(
    routed: GatewayProcess, admin: Admin, client: Client
) -> None:
    shadow = apb.ShadowPolicy(variant="2", fraction=1.0, max_inflight=1000)
    admin.set_route(versions_route("classifier", {"1": 100, "2": 0}, shadows=[shadow]))
    for pixels in PIXELS[:20]:
        client.infer(digit_request(pixels))
    _wait_for_comparisons(admin, "classifier", 1)
    where = ["--admin", routed.admin_address, "--token", TOKEN]
    for command in (["shadow-stats"], ["routes"], ["pools"], ["rollout", "list"], ["audit"]):
        done = _ctl(*where, *command, columns=80)
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout and all(len(line) <= 80 for line in done.stdout.splitlines()), done.stdout
    assert "classifier" in _ctl(*where, "routes", "classifier", columns=80).stdout
    assert routed.args[1] in _ctl(*where, "pools", columns=80).stdout  # the Triton endpoint, whole
