"""A few-second smoke run of the load generator through the gateway, both loop modes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.local.processes import GatewayProcess
from tests.procs import TritonCli

GATEWAY = str(Path(sys.executable).parent / "gateway")


def _run(scenario: dict[str, object], tmp_path: Path, *extra: str) -> dict[str, Any]:
    """The single result row of the run."""
    path, out = tmp_path / "scenario.yaml", tmp_path / "result.json"
    path.write_text(yaml.safe_dump(scenario))
    done = subprocess.run(
        [GATEWAY, "loadtest", str(path), "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["results"]
    return dict(row)


def test_closed_loop_smoke(gateway: GatewayProcess, tmp_path: Path) -> None:
    scenario = {
        "name": "smoke", "target": gateway.address, "concurrency": 4, "duration_s": 1.5, "warmup_s": 0.3,
        "requests": [{"model": "identity", "inputs": {"INPUT0": {"shape": [16]}}, "keys": 20}],
    }  # fmt: skip
    row = _run(scenario, tmp_path, "--plot", str(tmp_path / "run.png"))
    assert row["ok"] > 20 and row["errors"] == {} and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert (tmp_path / "run.png").read_bytes().startswith(b"\x89PNG\r\n")


def test_several_generator_processes_share_the_load_and_merge_results(gateway: GatewayProcess, tmp_path: Path) -> None:
    """Two processes, open loop: each sends half the rate; the merged result counts all requests."""
    scenario = {
        "name": "two", "target": gateway.address, "mode": "open", "rate": 40, "duration_s": 1.5, "warmup_s": 0.5,
        "processes": 2, "requests": [{"model": "identity", "inputs": {"INPUT0": {"shape": [4]}}}],
    }  # fmt: skip
    row = _run(scenario, tmp_path)
    assert 55 <= row["requests"] <= 65 and row["errors"] == {} and 0 < row["p50_ms"] <= row["max_ms"]


def test_open_loop_sends_at_the_rate_asked(gateway: GatewayProcess, tmp_path: Path) -> None:
    scenario = {
        "name": "open", "target": gateway.address, "mode": "open", "rate": 40, "duration_s": 1.5, "warmup_s": 0.2,
        "requests": [{"model": "identity", "inputs": {"INPUT0": {"shape": [4]}}}],
    }  # fmt: skip
    row = _run(scenario, tmp_path)
    assert 55 <= row["requests"] <= 65 and row["errors"] == {}


def test_compare_reports_ratio_and_gateway_cpu(gateway: GatewayProcess, triton: TritonCli, tmp_path: Path) -> None:
    scenario = {
        "name": "compare", "target": gateway.address, "concurrency": 2, "duration_s": 1.0, "warmup_s": 0.2,
        "requests": [{"model": "identity", "inputs": {"INPUT0": {"shape": [16]}}}],
    }  # fmt: skip
    assert gateway.process is not None
    extra = ("--direct", triton.address, "--gateway-pid", str(gateway.process.pid), "--rounds", "1")
    row = _run(scenario, tmp_path, *extra)
    assert row["direct_rps"] > 0 and row["gateway_rps"] > 0 and row["ratio"] > 0
    assert row["gateway_cpu_us_per_request"] > 0
