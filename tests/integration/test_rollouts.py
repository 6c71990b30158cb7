"""Rollouts the gateway drives, end to end: a real gateway in front of the session's Triton,
digits sent by client threads, the admin API speaking gRPC. Windows are short (a second or two)
so each rollout runs its whole course in a few seconds."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest
import yaml

from gateway.local.demo_rollout import digit_traffic
from gateway.local.processes import GatewayProcess
from gateway.local.redis_server import running_redis
from gateway.local.samples import digits
from gateway_admin import admin_pb2 as apb
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN, Admin, Client, digit_request, sample_value, scrape_metrics, until

GATEWAYCTL = str(Path(sys.executable).parent / "gatewayctl")  # the installed console script
OPS_TOKEN = "ops-team-token-1"
VARIANTS = {  # name: (upstream model, version)
    "1": ("classifier", "1"), "2": ("classifier", "2"),
    "errors": ("classifier_broken", "1"), "slow": ("classifier_broken", "2"),
}  # fmt: skip
GATES = {"shadow": {"min_agreement": 0.85}}  # versions 1 and 2 disagree on ~9% of these digits


def _config(triton: TritonCli, tmp_path: Path, name: str, redis_url: str | None = None) -> Path:
    variants = [{"name": n, "pool": "main", "model": m, "version": v, "weight": 100 if n == "1" else 0}
                for n, (m, v) in VARIANTS.items()]  # fmt: skip
    config: dict[str, Any] = {
        "pools": {"main": {"endpoints": [triton.address]}},
        "routes": {"classifier": {"variants": variants}},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN, "tokens": {"ops": OPS_TOKEN}},
        "rollouts": {"tick_s": 0.2, "state_file": str(tmp_path / "rollouts.json")},
        "audit": {"path": str(tmp_path / f"{name}-audit.jsonl")},
        "telemetry": {"metrics_port": 0, "metrics_host": "127.0.0.1"},
    }
    if redis_url:
        config["shared"] = {"redis_url": redis_url}
    path = tmp_path / f"{name}.yaml"  # one each: a gateway reloads its file when it changes
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def _gateway(
    triton: TritonCli, tmp_path: Path, name: str = "gateway", redis_url: str | None = None
) -> Iterator[GatewayProcess]:
    with running_gateway(["--config", str(_config(triton, tmp_path, name, redis_url))], tmp_path / f"{name}.log") as gw:
        yield gw


def _start(admin: Admin, candidate: str, token: str = TOKEN, gates: dict[str, Any] | None = None,
           **fields: Any) -> apb.RolloutStatus:  # fmt: skip
    spec = apb.RolloutSpec(model="classifier", candidate=candidate, baseline="1",
                           analysis_yaml=yaml.safe_dump(gates or GATES), **fields)  # fmt: skip
    metadata = (("authorization", f"Bearer {token}"),)
    return admin.stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=metadata, timeout=10)


def _status(admin: Admin) -> apb.RolloutStatus:
    return admin.stub.GetRollout(apb.GetRolloutRequest(model="classifier"), metadata=AUTH, timeout=10)


def _wait(admin: Admin, done: Callable[[apb.RolloutStatus], bool], timeout_s: float = 30.0) -> apb.RolloutStatus:
    deadline = time.monotonic() + timeout_s
    status = _status(admin)
    while not done(status) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = _status(admin)
    assert done(status), f"rollout stuck: {status}"
    return status


def _ended(status: apb.RolloutStatus) -> bool:
    return status.phase in ("Succeeded", "RolledBack", "Aborted", "Paused")


def _weights(admin: Admin) -> dict[str, int]:
    return {v.name: v.weight for v in admin.routes("classifier").routes[0].variants}


FAST: dict[str, Any] = {"steps": [20, 50], "interval_s": 1.5, "min_requests": 40}


def test_a_healthy_candidate_goes_through_shadow_and_canary_steps_to_promotion(
    triton: TritonCli, tmp_path: Path
) -> None:
    with _gateway(triton, tmp_path) as gateway, digit_traffic(gateway.address, threads=2) as traffic:
        admin = Admin(gateway.admin_address)
        started = _start(admin, "2", shadow_requests=60, **FAST)
        assert started.phase == "Shadow" and started.shadow_fraction == 1.0
        status = _wait(admin, _ended)
        assert status.phase == "Succeeded", status.reason
        assert [h.to for h in status.history] == ["Shadow", "Canary", "Canary", "Promoting", "Succeeded"]
        shadow_passed = status.history[1].reason
        assert "argmax agreement" in shadow_passed  # the shadow phase judged v2's answers against v1's
        assert _weights(admin) == {"1": 0, "2": 100, "errors": 0, "slow": 0}
        assert not admin.routes("classifier").routes[0].shadows  # shadow off after promotion
        metrics = scrape_metrics(gateway.metrics_address)
        assert sample_value(metrics, "gateway_rollout_phase", model="classifier", phase="Succeeded") == 1
        assert sample_value(metrics, "gateway_rollout_phase", model="classifier", phase="Canary") == 0
        assert sample_value(metrics, "gateway_rollout_weight", model="classifier", variant="2") == 100
        assert sample_value(metrics, "gateway_rollout_leader") == 1
        for variant in ("1", "2"):  # canary and primary latency, as Flagger's and Argo's templates compare them
            infer = {"method": "ModelInfer", "model": "classifier", "variant": variant}
            answered = sample_value(metrics, "gateway_requests_total", **infer, code="OK")
            assert answered > 0 and sample_value(metrics, "gateway_request_duration_seconds_count", **infer) == answered
            upstream = sample_value(metrics, "gateway_upstream_duration_seconds_count", pool="main", model="classifier",
                                    variant=variant)  # fmt: skip
            assert upstream == answered
    assert not traffic.failed  # nobody noticed


@pytest.mark.parametrize(("candidate", "gate"), [("errors", "errors"), ("slow", "latency")])
def test_a_bad_candidate_is_rolled_back_by_the_gate_it_fails(
    triton: TritonCli, tmp_path: Path, candidate: str, gate: str
) -> None:
    with _gateway(triton, tmp_path) as gateway, digit_traffic(gateway.address, threads=4):
        admin = Admin(gateway.admin_address)
        _start(admin, candidate, failure_limit=0, **FAST)
        status = _wait(admin, _ended)
        assert status.phase == "RolledBack", status.reason
        failed = re.match(r"gate ([a-z, ]+) failed", status.reason)
        assert failed and gate in failed.group(1).split(", ") and "window" in status.reason, status.reason
        failing = next(g for g in status.gates if g.gate == gate)
        assert failing.verdict == "fail" and failing.values
        assert _weights(admin) == {"1": 100, "2": 0, "errors": 0, "slow": 0}


def test_too_little_traffic_holds_the_rollout_then_pauses_it_never_promoting(triton: TritonCli, tmp_path: Path) -> None:
    with _gateway(triton, tmp_path) as gateway:
        admin = Admin(gateway.admin_address)
        client = Client(gateway.address)
        for index in range(20):  # some traffic, far from min_requests
            client.call(digit_request(digits()["pixels"][index]))
        _start(admin, "2", steps=[50], interval_s=0.5, min_requests=500, max_extensions=2)
        held = _wait(admin, lambda s: "inconclusive" in s.reason, timeout_s=10)
        assert held.phase == "Canary" and held.extensions >= 1
        status = _wait(admin, _ended, timeout_s=10)
        assert status.phase == "Paused" and status.paused_from == "Canary"
        assert "inconclusive after 2 extensions" in status.reason
        assert _weights(admin)["2"] == 50  # held where it was, never promoted
        resumed = admin.stub.ResumeRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert resumed.phase == "Canary"
        aborted = admin.stub.AbortRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert aborted.phase == "Aborted" and _weights(admin)["1"] == 100
        with pytest.raises(grpc.RpcError) as refused:
            admin.stub.ResumeRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        client.close()


def test_bad_requests_get_precise_statuses(triton: TritonCli, tmp_path: Path) -> None:
    with _gateway(triton, tmp_path) as gateway:
        admin = Admin(gateway.admin_address)
        cases: list[tuple[dict[str, Any], grpc.StatusCode, str]] = [
            ({"candidate": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "not a variant"),
            ({"candidate": "2", "steps": [50, 20]}, grpc.StatusCode.INVALID_ARGUMENT, "strictly increasing"),
            ({"candidate": "2", "gates": {"latency": {"factor": "x"}}}, grpc.StatusCode.INVALID_ARGUMENT,
             "gates file: latency.factor"),
        ]  # fmt: skip
        for fields, code, text in cases:
            with pytest.raises(grpc.RpcError) as error:
                _start(admin, **fields)
            assert error.value.code() == code and text in str(error.value.details()), error.value.details()
        _start(admin, "2", interval_s=60)
        with pytest.raises(grpc.RpcError) as twice:
            _start(admin, "2")
        assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as missing:
            admin.stub.GetRollout(apb.GetRolloutRequest(model="nothing"), metadata=AUTH, timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_gateway_restarted_mid_rollout_resumes_where_it_was(triton: TritonCli, tmp_path: Path) -> None:
    with _gateway(triton, tmp_path, "first") as gateway:
        admin = Admin(gateway.admin_address)
        _start(admin, "2", steps=[10, 60], interval_s=60, min_requests=40)
        assert _status(admin).phase == "Canary" and _weights(admin)["2"] == 10
    with _gateway(triton, tmp_path, "second") as gateway:  # the config still says 100/0
        admin = Admin(gateway.admin_address)
        status = _wait(admin, lambda s: s.leading)
        assert (status.phase, status.step) == ("Canary", 1)
        assert _wait_for(lambda: _weights(admin)["2"] == 10)
        promoted = admin.stub.PromoteRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert promoted.phase == "Succeeded" and _weights(admin)["2"] == 100


def _wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_two_gateways_sharing_redis_follow_one_leader(triton: TritonCli, tmp_path: Path) -> None:
    with (
        running_redis(tmp_path) as redis,
        _gateway(triton, tmp_path, "a", redis.url) as first,
        _gateway(triton, tmp_path, "b", redis.url) as second,
    ):
        admins = [Admin(first.admin_address), Admin(second.admin_address)]
        follower = next((a for a in admins if not _leading(a)), admins[1])
        started = _start(follower, "2", steps=[30, 60], interval_s=60)  # handed to the leader
        assert started.phase == "Canary"
        assert all(_wait_for(lambda a=a: _weights(a)["2"] == 30) for a in admins)  # type: ignore[misc]
        leaders = [_status(a).leading for a in admins]
        assert sorted(leaders) == [False, True]
        trails = [a.stub.GetAudit(apb.GetAuditRequest(verify=True), metadata=AUTH, timeout=10) for a in admins]
        assert all(t.verified for t in trails)  # one chain in the shared stream, whoever wrote each record
        assert [r.digest for r in trails[0].records] == [r.digest for r in trails[1].records]
        actions = [r.action for r in trails[0].records]
        assert "rollout.start" in actions and "rollout.transition" in actions


def _leading(admin: Admin) -> bool:
    response = admin.stub.ListRollouts(apb.ListRolloutsRequest(), metadata=AUTH, timeout=10)
    return bool(response.rollouts and response.rollouts[0].leading)


class _Hooks(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict[str, Any]]] = []
    refuse_promotion = 2  # confirm-promotion answers 503 this many times
    secret = "hook-secret"

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        payload = json.loads(body)
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        payload["signed"] = self.headers.get("X-Gateway-Signature") == expected
        type(self).calls.append(payload)
        status = 404 if payload["type"] == "rollback" else 200  # "no need to roll back"
        if payload["type"] == "confirm-promotion" and type(self).refuse_promotion > 0:
            type(self).refuse_promotion -= 1
            status = 503
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_webhooks_are_called_in_order_and_a_5xx_holds_promotion(triton: TritonCli, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    kinds = ("confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback", "event")
    hooks = [{"name": f"{k}-hook", "type": k, "url": url, "secret": _Hooks.secret} for k in kinds]
    try:
        with _gateway(triton, tmp_path) as gateway, digit_traffic(gateway.address, threads=2):
            admin = Admin(gateway.admin_address)
            _start(admin, "2", gates={**GATES, "webhooks": hooks}, **FAST)
            held = _wait(admin, lambda s: s.phase == "Promoting" and "held" in s.reason)
            assert _weights(admin)["2"] == 50  # not promoted while confirm-promotion says no
            status = _wait(admin, _ended)
            assert status.phase == "Succeeded" and held.reason.startswith("held: webhook confirm-promotion")
    finally:
        server.shutdown()
        server.server_close()
    gating = [c["type"] for c in _Hooks.calls if c["type"] != "event"]
    assert gating == ["confirm-rollout", "pre-rollout", "rollback", "rollout", "rollback", "rollout",
                      "confirm-promotion", "confirm-promotion", "confirm-promotion", "post-rollout"]  # fmt: skip
    events = [c["phase"] for c in _Hooks.calls if c["type"] == "event"]
    assert events == ["Canary", "Canary", "Promoting", "Succeeded"]
    assert all(c["signed"] and c["model"] == "classifier" for c in _Hooks.calls)


def test_the_audit_trail_names_who_did_what_and_its_chain_catches_tampering(triton: TritonCli, tmp_path: Path) -> None:
    with _gateway(triton, tmp_path) as gateway:
        admin = Admin(gateway.admin_address)
        ops = (("authorization", f"Bearer {OPS_TOKEN}"),)
        admin.stub.SetWeights(apb.SetWeightsRequest(model="classifier", weights={"1": 90, "2": 10}), metadata=ops,
                              timeout=10)  # fmt: skip
        admin.set_weights("classifier", **{"1": 100, "2": 0})
        _start(admin, "2", steps=[50], interval_s=60, token=OPS_TOKEN)
        admin.stub.AbortRollout(apb.RolloutCommandRequest(model="classifier", reason="wrong day"), metadata=ops,
                                timeout=10)  # fmt: skip
        trail = admin.stub.GetAudit(apb.GetAuditRequest(model="classifier", verify=True), metadata=AUTH, timeout=10)
        assert trail.verified and trail.verified_count == len(trail.records) >= 6
        seen = [(r.actor, r.action) for r in trail.records]
        assert seen[:2] == [("ops", "route.weights"), ("admin", "route.weights")]
        assert ("ops", "rollout.start") in seen and ("ops", "rollout.abort") in seen
        assert ("rollout/classifier", "route.weights") in seen
        assert any(r.action == "rollout.transition" and "wrong day" in r.reason for r in trail.records)
        first = json.loads(trail.records[0].after_json)
        assert [v["weight"] for v in first["variants"]][:2] == [90, 10]
        path = tmp_path / "gateway-audit.jsonl"
        lines = path.read_text().splitlines()
        record = json.loads(lines[1])
        record["actor"] = "somebody-else"
        lines[1] = json.dumps(record, sort_keys=True)
        path.write_text("\n".join(lines) + "\n")
        broken = admin.stub.GetAudit(apb.GetAuditRequest(verify=True), metadata=AUTH, timeout=10)
        assert not broken.verified and broken.broken_id == "2" and broken.verified_count == 1
        assert "edited" in broken.broken_reason


def test_gatewayctl_drives_a_rollout_with_options_before_or_after_the_command(
    triton: TritonCli, tmp_path: Path
) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text(yaml.safe_dump({"latency": {"factor": 1.5, "offset_ms": 20}}))
    with _gateway(triton, tmp_path) as gateway:
        where = ["--admin", gateway.admin_address, "--token", TOKEN]

        def ctl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([GATEWAYCTL, *args], capture_output=True, text=True, check=False, timeout=30,
                                  env={**os.environ, "COLUMNS": "200"})  # fmt: skip

        started = ctl(*where, "rollout", "start", "classifier", "2", "--steps", "10,50", "--interval", "2m",
                      "--min-requests", "100", "--gates", str(gates))  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert "Canary" in started.stdout and "step 1 of 2 (10%)" in started.stdout
        status = ctl("rollout", "status", "classifier", *where, "--json")
        shown = json.loads(status.stdout)
        assert (shown["phase"], shown["step"], shown["weights"]) == ("Canary", 1, {"1": 90, "2": 10})
        assert shown["spec"]["interval_s"] == 120.0 and "factor: 1.5" in shown["spec"]["analysis_yaml"]
        listed = ctl(*where, "--json", "rollout", "list")
        assert json.loads(listed.stdout)["rollouts"][0]["model"] == "classifier"
        paused = ctl(*where, "rollout", "pause", "classifier", "--reason", "lunch")
        assert paused.returncode == 0 and "Paused" in paused.stdout
        aborted = ctl("rollout", "abort", "classifier", *where)
        assert aborted.returncode == 0 and "Aborted" in aborted.stdout
        again = ctl(*where, "rollout", "resume", "classifier")
        assert again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr
        audit = ctl(*where, "audit", "--model", "classifier", "--verify")
        assert audit.returncode == 0 and "chain verified" in audit.stdout and "rollout.pause" in audit.stdout
    trail = tmp_path / "gateway-audit.jsonl"
    lines = trail.read_text().splitlines()
    del lines[2]  # a record removed: the one after it no longer links
    trail.write_text("\n".join(lines) + "\n")
    broken = subprocess.run([GATEWAYCTL, "audit", "--file", str(trail), "--verify"], capture_output=True, text=True,
                            check=False, timeout=30)  # fmt: skip
    assert broken.returncode == 1 and "chain broken at record 4" in broken.stdout.replace("\n", " ")


def test_a_rollout_owns_its_weights_and_stops_when_its_variants_go(triton: TritonCli, tmp_path: Path) -> None:
    with _gateway(triton, tmp_path) as gateway:
        admin = Admin(gateway.admin_address)
        _start(admin, "2", steps=[10, 50], interval_s=60)
        admin.set_weights("classifier", **{"1": 100, "2": 0})  # a person, under the rollout
        assert _wait_for(lambda: _weights(admin)["2"] == 10)
        trail = admin.stub.GetAudit(apb.GetAuditRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert any(r.reason.startswith("reconciled") and r.actor == "rollout/classifier" for r in trail.records)
        route = admin.routes("classifier").routes[0]
        del route.variants[1]  # variant "2", the candidate
        admin.set_route(route)
        status = _wait(admin, _ended, timeout_s=10)
        assert status.phase == "Aborted" and "no longer in the route" in status.reason


def test_the_leader_judges_on_every_replicas_traffic(triton: TritonCli, tmp_path: Path) -> None:
    """All the traffic goes to the replica that does not lead: the leader's windows still fill."""
    with (
        running_redis(tmp_path) as redis,
        _gateway(triton, tmp_path, "a", redis.url) as first,
        _gateway(triton, tmp_path, "b", redis.url) as second,
    ):
        admins = {first.address: Admin(first.admin_address), second.address: Admin(second.admin_address)}
        started = _start(admins[first.address], "2", steps=[50], interval_s=2.0, min_requests=40)
        leader = first.address if started.leading else second.address
        follower = second.address if leader == first.address else first.address
        with digit_traffic(follower, threads=2):
            status = _wait(admins[leader], _ended)
        assert status.phase == "Succeeded", status.reason
        errors = next(g for g in status.gates if g.gate == "errors")
        assert errors.values["candidate_failures"] == 0 and "fails 0.00%" in errors.detail
        assert (first.stop(), second.stop()) == (0, 0)  # both leave on SIGTERM, leader and follower


# A blend of a "0" and another digit from deploy/digits_sample.npz: version 1 calls it 0, version 2
# calls it 8. An INT64 CLASS of 0 against 8 once made the relative error infinite, which arrived in
# Python as null and crashed every round of the rollout's controller (issue 27, finding 1).
ZERO_AGAINST_EIGHT = [0, 0, 2, 14, 13, 2, 0, 0, 0, 0, 8, 16, 14, 11, 0, 0, 0, 1, 10, 10, 8, 8, 2, 0, 0, 2, 8, 8, 8, 6,
                      4, 0, 0, 4, 10, 8, 6, 4, 2, 0, 0, 0, 12, 10, 8, 8, 1, 0, 0, 0, 9, 16, 12, 8, 0, 0, 0, 0, 0, 12,
                      15, 4, 0, 0]  # fmt: skip


@contextlib.contextmanager
def _zeros_sent(address: str) -> Iterator[list[int]]:
    """Send ZERO_AGAINST_EIGHT every 50 ms beside the digit traffic; yields what came back per call."""
    stop, answered = threading.Event(), []

    def send() -> None:
        client = Client(address)
        while not stop.wait(0.05):
            response, _ = client.call(digit_request(np.array(ZERO_AGAINST_EIGHT, dtype=np.float32)))
            answered.append(_class_of(response))
        client.close()

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    try:
        yield answered
    finally:
        stop.set()
        worker.join(10)


def _class_of(response: Any) -> int:
    index = [o.name for o in response.outputs].index("CLASS")
    return int(np.frombuffer(response.raw_output_contents[index], dtype=np.int64)[0])


def _classes(triton: TritonCli) -> list[int]:
    """What versions 1 and 2 answer for ZERO_AGAINST_EIGHT, straight from Triton."""
    client = Client(triton.address)
    classes = []
    for version in ("1", "2"):
        request = digit_request(np.array(ZERO_AGAINST_EIGHT, dtype=np.float32))
        request.model_version = version
        response, _ = client.call(request)
        classes.append(_class_of(response))
    client.close()
    return classes


def test_a_shadow_phase_with_zero_outputs_is_judged_and_promoted(triton: TritonCli, tmp_path: Path) -> None:
    assert _classes(triton) == [0, 8]  # the case: the primary answers 0 where the shadow does not
    with (
        _gateway(triton, tmp_path) as gateway,
        digit_traffic(gateway.address, threads=2) as traffic,
        _zeros_sent(gateway.address) as zeros,
    ):
        admin = Admin(gateway.admin_address)
        _start(admin, "2", shadow_requests=60, gates={"shadow": {"min_agreement": 0.8}}, **FAST)
        status = _wait(admin, _ended, timeout_s=60)
        assert status.phase == "Succeeded", (status.reason, status.problem)
        assert not status.problem
        stats = admin.stub.GetShadowStats(apb.GetShadowStatsRequest(model="classifier"), metadata=AUTH, timeout=10)
        (pair,) = [s for s in stats.stats if s.variant == "2"]
        assert pair.compared >= 60 and pair.argmax_disagreements > 0 and pair.mismatches == 0
        assert 0 < pair.max_rel_error <= 2 and math.isfinite(pair.max_abs_error)  # 0 against 8: finite
        ctl = [GATEWAYCTL, "--admin", gateway.admin_address, "--token", TOKEN, "--json", "shadow-stats", "classifier"]
        shown = subprocess.run(ctl, capture_output=True, text=True, check=True, timeout=30)
        assert all("max_rel_error" in row and "mismatches" in row for row in json.loads(shown.stdout)["stats"])
        # A second rollout after this one starts and runs (a failed round once poisoned every later start).
        back = apb.RolloutSpec(model="classifier", candidate="1", baseline="2", steps=[50], interval_s=60)
        again = admin.stub.StartRollout(apb.StartRolloutRequest(spec=back), metadata=AUTH, timeout=10)
        assert again.phase == "Canary" and not again.problem
    assert zeros and set(zeros) <= {0, 8} and not traffic.failed
    assert gateway.log_path is not None and "rollout round failed" not in gateway.log_path.read_text()


def test_gatewayctl_runs_a_shadow_phase_gated_by_the_gates_files_shadow_thresholds(
    triton: TritonCli, tmp_path: Path
) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text(yaml.safe_dump({"shadow": {"min_agreement": 0.8, "max_failed": 0.05}}))
    with (
        _gateway(triton, tmp_path) as gateway,
        digit_traffic(gateway.address, threads=2),
        _zeros_sent(gateway.address),
    ):
        where = ["--admin", gateway.admin_address, "--token", TOKEN]
        started = subprocess.run([GATEWAYCTL, *where, "rollout", "start", "classifier", "2", "--shadow-requests", "60",
                                  "--steps", "50", "--interval", "1.5s", "--min-requests", "40", "--gates", str(gates)],
                                 capture_output=True, text=True, check=False, timeout=30)  # fmt: skip
        assert started.returncode == 0, started.stderr
        admin = Admin(gateway.admin_address)
        status = _wait(admin, _ended, timeout_s=60)
        assert status.phase == "Succeeded", (status.reason, status.problem)
        shadow_passed = next(h.reason for h in status.history if getattr(h, "from") == "Shadow")
        assert "argmax agreement" in shadow_passed and "(min 80.00%)" in shadow_passed, shadow_passed


def test_webhook_secrets_are_used_but_never_shown(triton: TritonCli, tmp_path: Path) -> None:
    """A secret from the gates file signs every webhook call, and appears in no status, list, audit
    record (API or file), event or log line: each shows "***" where the secret was."""
    secret = "s3cret-that-must-not-leak"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hooks.calls, _Hooks.secret, _Hooks.refuse_promotion = [], secret, 0
    calls = _Hooks.calls
    hooks = [{"name": "notify", "type": "event", "url": f"http://127.0.0.1:{server.server_port}/", "secret": secret}]
    shown: list[str] = []
    try:
        with _gateway(triton, tmp_path) as gateway:
            admin = Admin(gateway.admin_address)
            events = admin.stub.WatchEvents(apb.WatchEventsRequest(model="classifier"), metadata=AUTH, timeout=10)
            _start(admin, "2", steps=[50], interval_s=60, gates={**GATES, "webhooks": hooks})
            assert _wait_for(lambda: bool(calls), timeout_s=10)
            where = ["--admin", gateway.admin_address, "--token", TOKEN]
            for args in (["rollout", "status", "classifier"], ["--json", "rollout", "status", "classifier"],
                         ["--json", "rollout", "list"], ["--json", "audit", "--model", "classifier"]):  # fmt: skip
                done = subprocess.run([GATEWAYCTL, *where, *args], capture_output=True, text=True, check=False,
                                      timeout=30, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
                shown.append(done.stdout + done.stderr)
            status = _status(admin)
            shown.append(str(status))
            assert "secret: '***'" in status.spec.analysis_yaml, status.spec.analysis_yaml
            shown.append(str(admin.stub.GetAudit(apb.GetAuditRequest(model="classifier"), metadata=AUTH, timeout=10)))
            admin.stub.AbortRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
            seen: list[str] = []
            with contextlib.suppress(grpc.RpcError):  # the stream ends at its deadline
                seen.extend(str(event) for event in events)
            assert seen  # the rollout's route changes at least
            shown.extend(seen)
        assert gateway.log_path is not None
        shown.append(gateway.log_path.read_text())
        shown.append((tmp_path / "gateway-audit.jsonl").read_text())
    finally:
        server.shutdown()
        server.server_close()
        _Hooks.calls, _Hooks.secret, _Hooks.refuse_promotion = [], "hook-secret", 2
    assert calls and all(c["signed"] for c in calls)  # signed with the secret it was given
    assert all(secret not in text for text in shown)
    assert any("***" in text for text in shown[:4])


def test_rollout_status_exit_codes_and_watching_from_a_script(triton: TritonCli, tmp_path: Path) -> None:
    """Issue 27, finding 4: 0 Succeeded, 1 RolledBack, 2 Paused or Aborted, 4 still running; off a
    terminal --watch writes lines as it goes, --json --watch one object per line until the end."""
    with _gateway(triton, tmp_path) as gateway, digit_traffic(gateway.address, threads=4):
        where = ["--admin", gateway.admin_address, "--token", TOKEN]
        status = [GATEWAYCTL, *where, "rollout", "status", "classifier"]
        admin = Admin(gateway.admin_address)
        _start(admin, "errors", failure_limit=0, steps=[20], interval_s=1.5, min_requests=150)
        watched = subprocess.run([*status, "--watch"], capture_output=True, text=True, check=False, timeout=60)
        assert watched.returncode == 1, watched.stdout + watched.stderr
        assert "classifier RolledBack" in watched.stdout.splitlines()[-1], watched.stdout
        assert subprocess.run(status, capture_output=True, check=False, timeout=30).returncode == 1

        _start(admin, "2", steps=[20], interval_s=60)
        assert subprocess.run(status, capture_output=True, check=False, timeout=30).returncode == 4
        as_json = subprocess.Popen([*status, "--watch", "--json"], stdout=subprocess.PIPE, text=True)
        as_lines = subprocess.Popen([*status, "--watch"], stdout=subprocess.PIPE, text=True)
        assert as_json.stdout is not None and as_lines.stdout is not None
        first = json.loads(as_json.stdout.readline())  # at once, not when the rollout ends
        assert first["phase"] == "Canary" and "classifier Canary step 1/1" in as_lines.stdout.readline()
        admin.stub.PromoteRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        rest = [json.loads(line) for line in as_json.communicate(timeout=30)[0].splitlines()]
        assert as_json.returncode == 0 and rest[-1]["phase"] == "Succeeded"
        lines = as_lines.communicate(timeout=30)[0].splitlines()
        assert as_lines.returncode == 0 and any("Canary -> Promoting" in line for line in lines), lines
        assert "classifier Succeeded" in lines[-1]
        assert subprocess.run(status, capture_output=True, check=False, timeout=30).returncode == 0

        spec = apb.RolloutSpec(model="classifier", candidate="1", baseline="2", steps=[20], interval_s=60)
        admin.stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
        admin.stub.AbortRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert subprocess.run(status, capture_output=True, check=False, timeout=30).returncode == 2


@pytest.mark.timeout(300)  # seven gatewayctl runs, three rollouts
def test_a_pipeline_applies_a_rollout_file_and_gates_on_its_outcome(triton: TritonCli, tmp_path: Path) -> None:
    """Issue 26, part 3: `apply -f` starts what the file declares, once however often it is applied;
    `--wait` and `rollout wait` exit 0 on Succeeded, 1 on RolledBack, 3 when their timeout passes."""
    with _gateway(triton, tmp_path) as gateway, digit_traffic(gateway.address, threads=4):
        where = ["--admin", gateway.admin_address, "--token", TOKEN]
        good = tmp_path / "rollout.yaml"
        good.write_text(yaml.safe_dump({"model": "classifier", "candidate": 2, "baseline": "1", "steps": "20,50",
                                        "interval": "1500ms", "min_requests": 40, "analysis": GATES}))  # fmt: skip
        applied = subprocess.run([GATEWAYCTL, *where, "apply", "-f", str(good), "--wait", "--timeout", "60s"],
                                 capture_output=True, text=True, check=False, timeout=90)  # fmt: skip
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "rollout of classifier started" in applied.stdout and "Canary -> Promoting" in applied.stdout
        assert applied.stdout.splitlines()[-1].split()[1:3] == ["classifier", "Succeeded"], applied.stdout
        again = subprocess.run([GATEWAYCTL, *where, "apply", "-f", str(good), "--wait"], capture_output=True,
                               text=True, check=False, timeout=30)  # fmt: skip
        assert again.returncode == 0 and "unchanged (Succeeded)" in again.stdout, again.stdout + again.stderr
        admin = Admin(gateway.admin_address)
        trail = admin.stub.GetAudit(apb.GetAuditRequest(model="classifier"), metadata=AUTH, timeout=10)
        assert [r.action for r in trail.records].count("rollout.start") == 1  # applied twice, started once

        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"model": "classifier", "candidate": "errors", "baseline": "2", "steps": [20],
                                       "interval": 1.5, "min_requests": 150, "failure_limit": 0}))  # fmt: skip
        start = [GATEWAYCTL, *where, "apply", "-f", str(bad)]
        assert subprocess.run(start, capture_output=True, check=False, timeout=30).returncode == 0
        waited = subprocess.run([GATEWAYCTL, *where, "rollout", "wait", "classifier"], capture_output=True,
                                text=True, check=False, timeout=60)  # fmt: skip
        assert waited.returncode == 1 and "classifier RolledBack" in waited.stdout, waited.stdout + waited.stderr

        slow = [GATEWAYCTL, *where, "rollout", "start", "classifier", "1", "--baseline", "2", "--interval", "60s",
                "--wait", "--timeout", "2s"]  # fmt: skip
        timed_out = subprocess.run(slow, capture_output=True, text=True, check=False, timeout=30)
        assert timed_out.returncode == 3 and "classifier Canary" in timed_out.stdout, timed_out.stdout
        changed = tmp_path / "changed.yaml"
        changed.write_text(yaml.safe_dump({"model": "classifier", "candidate": "1", "baseline": "2", "steps": [30],
                                           "interval": "60s"}))  # fmt: skip
        replaced = subprocess.run([GATEWAYCTL, *where, "apply", "-f", str(changed)], capture_output=True, text=True,
                                  check=False, timeout=30)  # fmt: skip
        assert replaced.returncode == 0 and "restarted" in replaced.stdout, replaced.stdout + replaced.stderr
        assert _status(admin).spec.steps == [30] and _weights(admin)["1"] == 30

        wrong = tmp_path / "wrong.yaml"
        wrong.write_text(yaml.safe_dump({"model": "classifier", "candidate": "2", "stepz": [5]}))
        refused = subprocess.run([GATEWAYCTL, *where, "apply", "-f", str(wrong)], capture_output=True, text=True,
                                 check=False, timeout=30)  # fmt: skip
        assert refused.returncode == 2 and "stepz" in refused.stderr, refused.stderr


def test_a_newer_version_in_the_pool_starts_its_own_rollout_once(triton: TritonCli, tmp_path: Path) -> None:
    """`rollouts.on_new_version`: the route knows version 1 only; Triton holds 1 and 2. The gateway
    adds `v2` to the route at weight 0 and starts its rollout against `v1` by itself, recorded as
    `on_new_version`; once that rollout has ended (aborted here) it is not started again."""
    route = {"variants": [{"name": "v1", "pool": "main", "model": "classifier", "version": "1", "weight": 100}]}
    watch = {"spec": {"steps": [50], "interval_s": 30, "min_requests": 1000}, "poll_s": 0.3}
    config = {
        "pools": {"main": {"endpoints": [triton.address]}}, "routes": {"classifier": route},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "rollouts": {"tick_s": 0.2, "state_file": str(tmp_path / "rollouts.json"), "on_new_version": watch},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        admin = Admin(gateway.admin_address)

        def started() -> bool:
            return bool(admin.stub.ListRollouts(apb.ListRolloutsRequest(), metadata=AUTH, timeout=10).rollouts)

        waited = until(started, 15)
        assert waited < 15, (tmp_path / "gateway.log").read_text()[-2000:]
        status = _status(admin)
        assert (status.candidate, status.baseline, list(status.steps)) == ("v2", "v1", [50])
        variants = {v.name: (v.version, v.weight) for v in admin.routes("classifier").routes[0].variants}
        assert variants["v2"][0] == "2"
        trail = admin.stub.GetAudit(apb.GetAuditRequest(model="classifier"), metadata=AUTH, timeout=10)
        seen = [(r.actor, r.action) for r in trail.records]
        assert ("on_new_version", "route.set") in seen and ("on_new_version", "rollout.start") in seen, seen
        admin.stub.AbortRollout(apb.RolloutCommandRequest(model="classifier"), metadata=AUTH, timeout=10)
        created = _status(admin).created
        time.sleep(1.5)  # five looks at the index
        again = _status(admin)
        assert (again.phase, again.created) == ("Aborted", created)
