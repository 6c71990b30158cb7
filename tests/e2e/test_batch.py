"""`gateway batch`: a file of records through the gateway (or straight to Triton), in input
order; a run killed midway and resumed gives exactly the outputs of an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.local.processes import GatewayProcess
from gateway.local.samples import digits
from tests.procs import TritonCli, running_gateway

BATCH = [sys.executable, "-m", "gateway", "batch"]


@pytest.fixture
def gateway(triton: TritonCli, tmp_path: Path) -> Iterator[GatewayProcess]:
    with running_gateway(["--upstream", triton.address], tmp_path / "gateway.log") as process:
        yield process


def _records(tmp_path: Path, count: int) -> Path:
    pixels = np.tile(digits()["pixels"].astype(np.float32), (count // 300 + 1, 1))[:count]
    path = tmp_path / "digits.npz"
    np.savez(path, INPUT0=pixels, custom_id=np.array([f"row-{i}" for i in range(count)]))
    return path


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATCH, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_a_killed_run_resumed_gives_exactly_the_uninterrupted_outputs(gateway: GatewayProcess, tmp_path: Path) -> None:
    records = _records(tmp_path, 3000)
    common = ["--model", "classifier", "--version", "1", "--input", str(records), "--target", gateway.address]
    whole = _run(*common, "--output", str(tmp_path / "whole.jsonl"))
    assert whole.returncode == 0, whole.stderr
    assert "3000 records: 3000 succeeded, 0 failed" in whole.stdout
    killed_output = tmp_path / "killed.jsonl"
    process = subprocess.Popen([*BATCH, *common, "--output", str(killed_output), "--concurrency", "4"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if killed_output.exists() and killed_output.read_text().count("\n") >= 1000:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    manifest = json.loads((tmp_path / "killed.jsonl.manifest.json").read_text())
    assert 0 < manifest["completed"] < 3000, manifest
    again = _run(*common, "--output", str(killed_output))
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwritten by accident
    resumed = _run(*common, "--output", str(killed_output), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"(resumed at {manifest['completed']})" in resumed.stdout
    lines = killed_output.read_text().splitlines()
    assert lines == (tmp_path / "whole.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert (first["index"], first["custom_id"], first["model_version"]) == (0, "row-0", "1")
    assert first["outputs"]["CLASS"] == [int(digits()["class_v1"][0])] and len(first["outputs"]["LOGITS"]) == 10


def test_json_lines_and_parquet_straight_to_triton_with_failures_apart(triton: TritonCli, tmp_path: Path) -> None:
    pixels = digits()["pixels"][:6].astype(np.float32)
    jsonl = tmp_path / "in.jsonl"
    rows = [{"custom_id": f"j{i}", "INPUT0": row.tolist()} for i, row in enumerate(pixels)]
    rows.insert(3, {"custom_id": "broken", "INPUT0": [1.0, 2.0]})  # the wrong shape: Triton refuses it
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    direct = ["--model", "classifier", "--version", "2", "--target", triton.address, "--priority", ""]
    done = _run(*direct, "--input", str(jsonl), "--output", str(tmp_path / "j.jsonl"))
    assert done.returncode == 1 and "7 records: 6 succeeded, 1 failed" in done.stdout, done.stdout + done.stderr
    outputs = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [o["custom_id"] for o in outputs] == ["j0", "j1", "j2", "j3", "j4", "j5"]
    failures = [json.loads(line) for line in (tmp_path / "j.jsonl.failures.jsonl").read_text().splitlines()]
    assert [(f["index"], f["custom_id"], f["code"]) for f in failures] == [(3, "broken", "INVALID_ARGUMENT")]
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"INPUT0": [row.tolist() for row in pixels], "custom_id": [f"p{i}" for i in range(6)]}),
                   parquet)  # fmt: skip
    done = _run(*direct, "--input", str(parquet), "--output", str(tmp_path / "p.jsonl"))
    assert done.returncode == 0, done.stderr
    classes = [json.loads(line)["outputs"]["CLASS"][0] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert classes == [int(c) for c in digits()["class_v2"][:6]]


def test_a_malformed_line_fails_alone_and_an_unreadable_file_is_one_line(triton: TritonCli, tmp_path: Path) -> None:
    """Issue 27, finding 5: line 8 of 20 not JSON: that record fails (its line and reason in the
    failures file), the other 19 run, the summary prints, exit 1; a file that cannot be read at all
    is exit 2 with one line naming it, never a traceback."""
    pixels = digits()["pixels"][:20].astype(np.float32)
    lines = [json.dumps({"custom_id": f"r{i}", "INPUT0": row.tolist()}) for i, row in enumerate(pixels)]
    lines[7] = '{"custom_id": "r7", "INPUT0": [1, 2'  # cut off
    source = tmp_path / "recs_bad.jsonl"
    source.write_text("\n".join(lines) + "\n")
    direct = ["--model", "classifier", "--version", "1", "--target", triton.address, "--priority", ""]
    done = _run(*direct, "--input", str(source), "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 1 and "20 records: 19 succeeded, 1 failed" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    written = [json.loads(line)["custom_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == [f"r{i}" for i in range(20) if i != 7]
    (failure,) = [json.loads(line) for line in (tmp_path / "out.jsonl.failures.jsonl").read_text().splitlines()]
    assert (failure["index"], failure["line"], failure["code"]) == (7, 8, "INVALID_ARGUMENT")
    assert "line 8: not JSON" in failure["message"]
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive at all")
    unreadable = _run(*direct, "--input", str(garbage), "--output", str(tmp_path / "g.jsonl"))
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
    assert unreadable.stderr.strip().splitlines() == [unreadable.stderr.strip()]  # one line
    assert str(garbage) in unreadable.stderr and "not a readable .npz" not in unreadable.stdout
