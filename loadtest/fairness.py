"""The flow-control rows of `make bench`: one caller's flood must not starve the others.

`heavy` (~5 ms an execution, one instance) has a capacity measured first. Each row runs open-loop
Poisson senders side by side for the run's duration, each at a multiple of that capacity with its
own tenant (`x-tenant`) or priority (the request parameter `priority`, which Triton and the
gateway both read) and a deadline, once directly and once through a gateway with admission control
(`--max-inflight 2 --max-queue 16`), interleaved, each run once Triton has worked off what the one
before left queued. Direct is the best-configured Triton for the job: a copy of `heavy`
(`heavy_queued`, same cost, one request an execution) behind Triton's own queue policy: a
bounded queue (`max_queue_size` 16), `REJECT` at the deadline, three priority levels. Rows:

- flood: tenant A at 3x capacity beside B at 0.25x, 100 ms deadlines: the share of B's requests
  answered OK (target: at least 0.95 through the gateway);
- equal demand: four tenants at 0.75x each: Jain's fairness index over their goodputs (target
  0.95) and the total goodput as a share of capacity (target 0.9);
- priorities: the lowest class at 3x beside the highest at 0.2x, 1 s deadlines: the highest
  class's p99 against its p99 alone on an idle model (target 1.2x at most), and how many of its
  requests failed (target none).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import DEFAULT_MODEL_REPOSITORY, TritonOptions, TritonProcess
from loadtest.overload import GATEWAY_FLAGS, capacity, drained
from loadtest.runner import Result, run_scenario
from loadtest.scenario import RequestMix, Scenario, TensorSpec

__all__ = ["ROWS", "fairness_rows", "jain", "queued_repository"]

QUEUED_MODEL = "heavy_queued"


def queued_repository(folder: Path, source: Path = DEFAULT_MODEL_REPOSITORY) -> Path:
    """`heavy`, and `heavy_queued`: the same model behind Triton's queue policy (one request an
    execution, a queue of 16, REJECT at the request's timeout, three priority levels)."""
    repository = folder / "models-queued"
    shutil.copytree(source / "heavy", repository / "heavy")
    shutil.copytree(source / "heavy", repository / QUEUED_MODEL)
    config = repository / QUEUED_MODEL / "config.pbtxt"
    text = re.sub(r'name:\s*"heavy"', f'name: "{QUEUED_MODEL}"', config.read_text())
    text = re.sub(r"max_batch_size:\s*\d+", "max_batch_size: 1", text)
    text += """
dynamic_batching {
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy {
    max_queue_size: 16
    timeout_action: REJECT
    default_timeout_microseconds: 100000
    allow_timeout_override: true
  }
}
"""
    config.write_text(text)
    return repository


@dataclass(frozen=True, slots=True)
class Sender:
    name: str
    share: float  # of the model's capacity
    deadline_s: float
    tenant: str = ""
    priority: int = 0  # 0: the default


@dataclass(frozen=True, slots=True)
class FairnessRow:
    name: str
    kind: str  # flood | equal | priorities
    senders: tuple[Sender, ...]


ROWS = (
    FairnessRow("flow control, flood: tenant A at 3x capacity beside B at 0.25x, 100 ms deadlines", "flood",
                (Sender("A", 3.0, 0.1, tenant="A"), Sender("B", 0.25, 0.1, tenant="B"))),
    FairnessRow("flow control, equal demand: four tenants at 0.75x capacity each, 100 ms deadlines", "equal",
                tuple(Sender(name, 0.75, 0.1, tenant=name) for name in ("A", "B", "C", "D"))),
    FairnessRow("flow control, priorities: the lowest class at 3x capacity beside the highest at 0.2x, 1 s deadlines",
                "priorities", (Sender("lowest", 3.0, 1.0, priority=3), Sender("highest", 0.2, 1.0, priority=1))),
)  # fmt: skip


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    if not values or not any(values):
        return 0.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def _scenario(sender: Sender, model: str, served: float, duration_s: float) -> Scenario:
    parameters = {"priority": sender.priority} if sender.priority else {}
    mix = RequestMix(model=model, inputs={"INPUT0": TensorSpec(shape=[1, 16])}, keys=10_000,
                     metadata={"x-tenant": sender.tenant} if sender.tenant else {}, parameters=parameters)  # fmt: skip
    return Scenario(name=sender.name, mode="open", arrivals="poisson", rate=sender.share * served,
                    timeout_s=sender.deadline_s, requests=[mix], duration_s=duration_s, warmup_s=1.0,
                    connections=2)  # fmt: skip


async def _together(
    senders: tuple[Sender, ...], target: str, model: str, served: float, duration_s: float
) -> dict[str, Result]:
    runs = [run_scenario(_scenario(s, model, served, duration_s), target) for s in senders]
    return dict(zip((s.name for s in senders), await asyncio.gather(*runs), strict=True))


def _ok_share(results: list[Result]) -> float:
    requests = sum(r.requests for r in results)
    return sum(r.codes["OK"] for r in results) / requests if requests else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _summary(row: FairnessRow, sides: dict[str, list[dict[str, Result]]], served: float) -> dict[str, object]:
    figures: dict[str, object] = {"scenario": row.name, "baseline": "Triton's queue policy",
                                  "capacity_rps": round(served, 1)}  # fmt: skip
    for side, runs in sides.items():
        by_sender = {s.name: [run[s.name] for run in runs] for s in row.senders}
        if row.kind == "flood":
            figures[f"{side}_B_success"] = round(_ok_share(by_sender["B"]), 3)
            figures[f"{side}_A_goodput_rps"] = round(_mean([r.throughput for r in by_sender["A"]]), 1)
        elif row.kind == "equal":
            goodputs = [_mean([r.throughput for r in results]) for results in by_sender.values()]
            figures[f"{side}_jain"] = round(jain(goodputs), 3)
            figures[f"{side}_goodput_of_capacity"] = round(sum(goodputs) / served, 2) if served else None
        else:
            idle = [run["idle"] for run in runs]
            p99 = _mean([r.accepted_percentile_ms(99) for r in by_sender["highest"]])
            idle_p99 = _mean([r.accepted_percentile_ms(99) for r in idle])
            figures[f"{side}_highest_p99_ms"] = round(p99, 1)
            figures[f"{side}_highest_idle_p99_ms"] = round(idle_p99, 1)
            figures[f"{side}_highest_p99_vs_idle"] = round(p99 / idle_p99, 2) if idle_p99 else None
            figures[f"{side}_highest_failed"] = sum(r.requests - r.codes["OK"] for r in by_sender["highest"])
            figures[f"{side}_lowest_goodput_rps"] = round(_mean([r.throughput for r in by_sender["lowest"]]), 1)
    return figures


def fairness_rows(
    console: Console, workdir: Path, rounds: int, duration_s: float, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    selected = [row for row in ROWS if wanted(row.name)]
    if not selected:
        return []
    rows = []
    triton = TritonProcess(TritonOptions(grpc_port=free_port(), model_repository=queued_repository(workdir)))
    with (workdir / "triton-queued.log").open("wb") as log:
        triton.start(log)
    try:
        triton.wait_ready()
        target = triton.options.grpc_target
        served = capacity(target, min(duration_s, 3.0))
        args = ["--upstream", target, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING", *GATEWAY_FLAGS]
        with GatewayProcess(args, workdir / "gateway-fairness.log").serving() as (address, _pid):
            for row in selected:
                console.print(f"[bold]{row.name}[/]: capacity {served:.0f}/s, {rounds} rounds")
                sides: dict[str, list[dict[str, Result]]] = {"direct": [], "gateway": []}
                for _ in range(rounds):
                    for side, where, model in (("direct", target, QUEUED_MODEL), ("gateway", address, "heavy")):
                        asyncio.run(drained(target))
                        run = {}
                        if row.kind == "priorities":  # the highest class alone first: its idle p99
                            alone = tuple(s for s in row.senders if s.name == "highest")
                            run["idle"] = asyncio.run(_together(alone, where, model, served, duration_s))["highest"]
                            asyncio.run(drained(target))
                        run |= asyncio.run(_together(row.senders, where, model, served, duration_s))
                        sides[side].append(run)
                rows.append(_summary(row, sides, served))
    finally:
        triton.stop()
    return rows
