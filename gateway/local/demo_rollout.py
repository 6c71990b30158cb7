"""The demo's story: a client sends digits to `classifier` through the gateway; the gateway rolls
version 2 out by itself (a shadow phase comparing its answers with version 1's, canary steps,
promotion), then rolls a broken candidate back on its own when its errors gate fails; the audit
trail at the end says who did what. Real traffic, a real Triton; about half a minute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from tritonclient.grpc import service_pb2 as ipb
from tritonclient.grpc import service_pb2_grpc

from gateway.ctl.rollouts import status_view
from gateway.local.samples import digits
from gateway_admin import admin_pb2 as pb
from gateway_admin import admin_pb2_grpc

__all__ = ["DEMO_TOKEN", "DigitTraffic", "demo_route", "digit_traffic", "tell_the_rollout_story"]

DEMO_TOKEN = "demo-admin-token"
_AUTH = (("authorization", f"Bearer {DEMO_TOKEN}"),)
ENDED = ("Succeeded", "RolledBack", "Aborted", "Paused")


def demo_route(pool: str) -> dict[str, Any]:
    """`classifier` with its two versions and a broken build as variants; version 1 serves."""
    variants = [("1", "classifier", "1", 100), ("2", "classifier", "2", 0), ("broken", "classifier_broken", "1", 0)]
    return {"variants": [{"name": n, "pool": pool, "model": m, "version": v, "weight": w} for n, m, v, w in variants]}


@dataclass
class DigitTraffic:
    """Digits sent by client threads without pause; what came back, per variant."""

    address: str
    answered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    wrong: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def send(self) -> None:
        data = digits()
        with grpc.insecure_channel(self.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            index = 0
            while not self.stop.is_set():
                row = index % len(data["pixels"])
                request = ipb.ModelInferRequest(model_name="classifier")
                request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
                request.raw_input_contents.append(data["pixels"][row].astype("float32").tobytes())
                try:
                    _, call = stub.ModelInfer.with_call(request, timeout=5)
                    variant = dict(call.trailing_metadata()).get("x-gateway-variant", "?")
                    self.answered[variant] = self.answered.get(variant, 0) + 1
                except grpc.RpcError as exc:
                    trailing: dict[str, Any] = dict(exc.trailing_metadata() or ()) if isinstance(exc, grpc.Call) else {}
                    variant = str(trailing.get("x-gateway-variant", "?"))
                    self.failed[variant] = self.failed.get(variant, 0) + 1
                index += 1

    def line(self) -> str:
        answered = ", ".join(f"{v}: {n}" for v, n in sorted(self.answered.items()))
        failed = ", ".join(f"{v}: {n}" for v, n in sorted(self.failed.items())) or "none"
        return f"client: answered by variant {{{answered}}}; failed {{{failed}}}"


@contextmanager
def digit_traffic(address: str, threads: int = 3) -> Iterator[DigitTraffic]:
    traffic = DigitTraffic(address)
    workers = [threading.Thread(target=traffic.send, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        for worker in workers:
            worker.join(10)


def _follow(
    console: Console, admin: admin_pb2_grpc.GatewayAdminStub, traffic: DigitTraffic, timeout_s: float
) -> pb.RolloutStatus:
    """The rollout live until it ends: its status, and each transition printed as it happens."""
    seen, deadline = 0, time.monotonic() + timeout_s
    status = admin.GetRollout(pb.GetRolloutRequest(model="classifier"), metadata=_AUTH, timeout=5)
    with Live(
        Group(status_view(status), traffic.line()), console=console, refresh_per_second=4, transient=True
    ) as live:
        while True:
            status = admin.GetRollout(pb.GetRolloutRequest(model="classifier"), metadata=_AUTH, timeout=5)
            for entry in status.history[seen:]:
                live.console.print(f"  [bold]{getattr(entry, 'from')} → {entry.to}[/]: {entry.reason}")
            seen = len(status.history)
            live.update(Group(status_view(status), traffic.line()))
            if status.phase in ENDED or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    console.print(status_view(status))
    console.print(traffic.line())
    return status


def _start(admin: admin_pb2_grpc.GatewayAdminStub, candidate: str, baseline: str, **fields: Any) -> None:
    spec = pb.RolloutSpec(model="classifier", candidate=candidate, baseline=baseline, **fields)
    admin.StartRollout(pb.StartRolloutRequest(spec=spec), metadata=_AUTH, timeout=10)


def _audit(console: Console, admin: admin_pb2_grpc.GatewayAdminStub) -> bool:
    trail = admin.GetAudit(pb.GetAuditRequest(verify=True), metadata=_AUTH, timeout=10)
    others = sum(1 for record in trail.records if record.target != "classifier")
    table = Table(title=f"audit trail of classifier (gatewayctl audit --model classifier --verify); "
                        f"{others} records about other models")  # fmt: skip
    for column in ("id", "actor", "action", "target", "reason"):
        table.add_column(column)
    for record in (r for r in trail.records if r.target == "classifier"):
        table.add_row(str(record.id), record.actor, record.action, record.target, record.reason[:90])
    console.print(table)
    console.print("chain verified: " + (f"{trail.verified_count} records" if trail.verified
                                        else f"NO, broken at record {trail.broken_id}"))  # fmt: skip
    return trail.verified


def tell_the_rollout_story(console: Console, address: str, admin_address: str) -> bool:
    """True when what it shows happened: v2 promoted, the broken build rolled back by its gate,
    the audit chain verified."""
    with grpc.insecure_channel(admin_address) as channel, digit_traffic(address) as traffic:
        admin = admin_pb2_grpc.GatewayAdminStub(channel)
        time.sleep(1.0)
        console.rule("[bold]1. Rolling classifier v2 out: shadow phase, canary steps, promotion")
        gates = yaml.safe_dump({"shadow": {"min_agreement": 0.85}})  # v2 disagrees with v1 on ~9% of digits
        _start(admin, "2", "1", shadow_requests=300, steps=[10, 30, 60], interval_s=5.0, min_requests=100,
               analysis_yaml=gates)  # fmt: skip
        good = _follow(console, admin, traffic, timeout_s=90)
        shadow = next((h.reason for h in good.history if getattr(h, "from") == "Shadow"), "")
        console.print(f"v2 against v1 in the shadow phase: {shadow.partition(': ')[2] or 'not reached'}")
        console.rule("[bold]2. Rolling a broken build out: it fails every third request")
        _start(admin, "broken", "2", steps=[10, 30, 60], interval_s=5.0, min_requests=100)
        bad = _follow(console, admin, traffic, timeout_s=60)
        console.rule("[bold]3. Who did what")
        audited = _audit(console, admin)
    promoted = good.phase == "Succeeded" and good.weights["2"] == 100
    rolled_back = bad.phase == "RolledBack" and "gate errors" in bad.reason and bad.weights["2"] == 100
    console.print(f"v2 promoted: {'yes' if promoted else 'NO'}; broken build rolled back by its errors gate: "
                  f"{'yes' if rolled_back else 'NO'}; audit chain verified: {'yes' if audited else 'NO'}")  # fmt: skip
    return promoted and rolled_back and audited
