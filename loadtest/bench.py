"""`make bench`: a real Triton, the gateway in front of it, each scenario compared with direct.

Scenarios (closed loop): `identity` FP32[16] at 16 in flight (throughput) and at 1 (added
latency), the 602 KB `image` at 16, and the cache-hit path (one repeated `identity` request
through a gateway started with --cache, against the same request sent directly). Results: a JSON
file and a Markdown table in the output folder, with the hardware recorded.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rich.console import Console

from gateway.localrun import GatewayProcess, free_port
from gateway.triton import TritonOptions, TritonProcess
from loadtest.compare import compare
from loadtest.report import hardware, table, write_json
from loadtest.scenario import RequestMix, Scenario, TensorSpec

__all__ = ["run_bench"]


def _scenarios(duration_s: float) -> list[tuple[Scenario, bool]]:
    """(scenario, through the caching gateway)."""
    identity = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=10_000, zipf_s=1.0001)
    image = RequestMix(model="image", inputs={"INPUT0": TensorSpec(shape=[1, 3, 224, 224])}, keys=4)
    repeated = RequestMix(model="identity", inputs={"INPUT0": TensorSpec(shape=[16])}, keys=1)

    def scenario(name: str, concurrency: int, mix: RequestMix) -> Scenario:
        return Scenario(name=name, concurrency=concurrency, requests=[mix], duration_s=duration_s, warmup_s=1.0)

    return [
        (scenario("identity c=16", 16, identity), False),
        (scenario("identity c=1", 1, identity), False),
        (scenario("image 602KB c=16", 16, image), False),
        (scenario("cache hit c=16", 16, repeated), True),
    ]


def _table_markdown(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def run_bench(out: Path, duration_s: float = 5.0, rounds: int = 2) -> int:
    console = Console(width=160)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    gateways = {
        cached: GatewayProcess(
            ["--upstream", triton.options.grpc_target, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING",
             *(["--cache"] if cached else [])],
            workdir / f"gateway-{cached}.log",
        )
        for cached in (False, True)
    }  # fmt: skip
    try:
        triton.wait_ready()
        for gateway in gateways.values():
            gateway.start()
        rows = []
        for scenario, cached in _scenarios(duration_s):
            gateway = gateways[cached]
            assert gateway.process is not None
            console.print(f"[bold]{scenario.name}[/]: direct vs gateway, {rounds} rounds of {duration_s:.0f} s each")
            result = asyncio.run(
                compare(scenario, triton.options.grpc_target, gateway.address, gateway.process.pid, rounds)
            )
            rows.append(result.summary())
        console.print(table("gateway vs direct Triton (same run, interleaved)", rows))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        write_json(out / f"bench-{stamp}.json", {"duration_s": duration_s, "rounds": rounds, "results": rows})
        (out / f"bench-{stamp}.md").write_text(f"hardware: {hardware()}\n\n" + _table_markdown(rows))
        console.print(f"results in {out}/bench-{stamp}.json and .md")
        return 0
    finally:
        for gateway in gateways.values():
            gateway.stop()
        triton.stop()
