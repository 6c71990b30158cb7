"""How fast the gateway rolls a bad candidate back at the default rollout settings (steps 5,25,50,
interval 30s, min 300 requests per variant and window, failure limit 1), and how many requests
the candidate reached: a real Triton, the gateway, digits sent by client threads.

    python -m loadtest.rollback_time [--threads 3] [--out results]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from rich.console import Console
from rich.table import Table

from gateway.local.demo_rollout import DEMO_TOKEN, demo_route, digit_traffic
from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import TritonOptions, TritonProcess
from gateway_admin import admin_pb2 as pb
from gateway_admin import admin_pb2_grpc

__all__ = ["measure"]

AUTH = (("authorization", f"Bearer {DEMO_TOKEN}"),)
CANDIDATES = {"errors": ("classifier_broken", "1"), "slow": ("classifier_broken", "2")}


def _one(admin: admin_pb2_grpc.GatewayAdminStub, address: str, candidate: str, threads: int) -> dict[str, Any]:
    admin.SetWeights(pb.SetWeightsRequest(model="classifier", weights={"1": 100, "2": 0, candidate: 0}),
                     metadata=AUTH, timeout=10)  # fmt: skip
    with digit_traffic(address, threads) as traffic:
        time.sleep(2.0)
        before = dict(traffic.answered), dict(traffic.failed)
        started = time.monotonic()
        spec = pb.RolloutSpec(model="classifier", candidate=candidate, baseline="1")  # every default
        admin.StartRollout(pb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
        status = admin.GetRollout(pb.GetRolloutRequest(model="classifier"), metadata=AUTH, timeout=10)
        while status.phase not in ("RolledBack", "Succeeded", "Paused") and time.monotonic() - started < 300:
            time.sleep(0.1)
            status = admin.GetRollout(pb.GetRolloutRequest(model="classifier"), metadata=AUTH, timeout=10)
        elapsed = time.monotonic() - started
        answered = traffic.answered.get(candidate, 0) - before[0].get(candidate, 0)
        failed = traffic.failed.get(candidate, 0) - before[1].get(candidate, 0)
        total = sum(traffic.answered.values()) + sum(traffic.failed.values())
        total -= sum(before[0].values()) + sum(before[1].values())
    return {"candidate": candidate, "phase": status.phase, "seconds": round(elapsed, 1), "reason": status.reason,
            "candidate_requests": answered + failed, "candidate_failed": failed,
            "requests_per_s": round(total / elapsed, 1)}  # fmt: skip


def measure(threads: int = 3) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="rollback-time-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    route = demo_route("main")
    route["variants"] = [v for v in route["variants"] if v["name"] in ("1", "2")]
    route["variants"] += [{"name": n, "pool": "main", "model": m, "version": v, "weight": 0}
                          for n, (m, v) in CANDIDATES.items()]  # fmt: skip
    config = {
        "listen": "127.0.0.1:0", "pools": {"main": {"endpoints": [triton.options.grpc_target]}},
        "routes": {"classifier": route}, "admin": {"listen": "127.0.0.1:0", "tokens": {"bench": DEMO_TOKEN}},
    }  # fmt: skip
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = GatewayProcess(["--config", str(workdir / "gateway.yaml")], workdir / "gateway.log")
    try:
        triton.wait_ready()
        address = gateway.start()
        with grpc.insecure_channel(gateway.admin_address) as channel:
            admin = admin_pb2_grpc.GatewayAdminStub(channel)
            return [_one(admin, address, candidate, threads) for candidate in CANDIDATES]
    finally:
        gateway.stop()
        triton.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=3, help="client threads sending digits")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    rows = measure(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollback_time.json").write_text(json.dumps(rows, indent=1))
    table = Table(title="bad candidates at the default rollout settings")
    for column in ("candidate", "outcome", "seconds", "candidate requests (failed)", "traffic req/s", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["candidate"], row["phase"], str(row["seconds"]),
                      f"{row['candidate_requests']} ({row['candidate_failed']})", str(row["requests_per_s"]),
                      row["reason"][:100])  # fmt: skip
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
