"""`gateway demo` (what `make demo` runs) shows real Triton answers through the gateway, then a
rollout the gateway drives to promotion and a broken candidate it rolls back by itself, then a
Redis Stream predicted as it arrives."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_every_model_through_the_gateway() -> None:
    command = [sys.executable, "-m", "gateway", "demo"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for model in ("identity_batched", "image", "add_sub_fp32", "text", "classifier", "slow", "counter", "stream"):
        assert f"│ {model} " in out, model
    assert "5 responses on ModelStreamInfer: [0, 1, 2, 3, 4]" in out
    assert "NOT_FOUND" in out and "INVALID_ARGUMENT" in out and "INTERNAL" in out
    assert "gateway exit code 0, triton exit code 0" in out
    assert "Shadow → Canary: shadow phase passed: argmax agreement" in out
    assert "Promoting → Succeeded: promoted" in out
    assert "Canary → RolledBack: gate errors failed" in out
    assert "v2 promoted: yes; broken build rolled back by its errors gate: yes; audit chain verified: yes" in out
    assert "600 readings, 600 predictions, 0 dead letters" in out
