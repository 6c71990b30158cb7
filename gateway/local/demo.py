"""`make demo`: a real Triton, the gateway in front of it, one request per model (a table), then
the gateway rolling a new classifier out by itself, and a broken one back (`demo_rollout`), then
a Redis Stream predicted as it arrives (`demo_stream`)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import yaml
from rich.console import Console
from rich.table import Table
from tritonclient.utils import InferenceServerException

from gateway.local.demo_rollout import DEMO_TOKEN, demo_route, tell_the_rollout_story
from gateway.local.demo_stream import tell_the_streaming_story
from gateway.local.processes import GatewayProcess, free_port
from gateway.local.samples import Sample, infer_inputs, samples
from gateway.local.triton import TritonOptions, TritonProcess

__all__ = ["run_demo"]


def _summary(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    shown = ", ".join(
        repr(v.decode()) if isinstance(v, bytes) else f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)
        for v in flat[:4]
    )
    return f"{list(array.shape)} {array.dtype.name}: [{shown}{', ...' if flat.size > 4 else ''}]"


def _infer(client: grpcclient.InferenceServerClient, sample: Sample, table: Table) -> bool:
    started = time.perf_counter()
    try:
        result = client.infer(sample.model, infer_inputs(sample.inputs), model_version=sample.version)
    except InferenceServerException as exc:
        elapsed = (time.perf_counter() - started) * 1000
        table.add_row(
            sample.model,
            sample.version or "-",
            (exc.status() or "").removeprefix("StatusCode."),
            exc.message() or "",
            f"{elapsed:.1f}",
        )
        return False
    elapsed = (time.perf_counter() - started) * 1000
    outputs = "\n".join(f"{name} {_summary(result.as_numpy(name))}" for name in sample.outputs)
    version = result.get_response().model_version
    table.add_row(
        sample.model, version, "OK", outputs + (f"  ({sample.note})" if sample.note else ""), f"{elapsed:.1f}"
    )
    return True


def _error_cases(client: grpcclient.InferenceServerClient, table: Table) -> None:
    """Requests that must fail, to show the status the gateway answers with."""
    bad_shape = {"INPUT0": np.zeros((2, 64), np.float32)[:, :10].copy()}
    for sample in (
        Sample(
            "flaky",
            {"INPUT0": np.ones(4, np.float32), "FAIL": np.array([True])},
            ("OUTPUT0",),
            note="model error",
        ),
        Sample("no_such_model", {"INPUT0": np.ones(4, np.float32)}, ("OUTPUT0",)),
        Sample("classifier", bad_shape, ("CLASS",), version="1"),
    ):
        _infer(client, sample, table)


def _stream(client: grpcclient.InferenceServerClient, table: Table) -> None:
    received: list[int] = []
    started = time.perf_counter()
    client.start_stream(callback=lambda result, error: received.append(int(result.as_numpy("OUTPUT0")[0])))
    client.async_stream_infer("stream", infer_inputs({"N": np.array([5], dtype=np.int32)}))
    client.stop_stream()
    elapsed = (time.perf_counter() - started) * 1000
    table.add_row("stream", "1", "OK", f"{len(received)} responses on ModelStreamInfer: {received}", f"{elapsed:.1f}")


def run_demo() -> int:
    console = Console(width=160)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    started = time.monotonic()
    with (workdir / "triton.log").open("wb") as triton_log:
        triton.start(triton_log)
    config = {
        "listen": "127.0.0.1:0", "pools": {"main": {"endpoints": [triton.options.grpc_target]}},
        "default_pool": "main", "routes": {"classifier": demo_route("main")},
        "admin": {"listen": "127.0.0.1:0", "tokens": {"demo": DEMO_TOKEN}},
        "audit": {"path": str(workdir / "audit.jsonl")},
        "rollouts": {"tick_s": 0.25, "state_file": str(workdir / "rollouts.json")},
    }  # fmt: skip
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    gateway = GatewayProcess(["--config", str(workdir / "gateway.yaml")], workdir / "gateway.log")
    try:
        models = triton.wait_ready()
        ready_after = time.monotonic() - started
        console.print(f"[bold]Triton[/] ready on {triton.options.grpc_target}: {models} models, {ready_after:.1f}s")
        address = gateway.start()
        console.print(f"[bold]Gateway[/] serving on {address}, in front of it; logs in {workdir}")
        table = Table(title=f"Requests through the gateway at {address} (tritonclient.grpc)")
        for column in ("model", "version", "status", "outputs / message", "ms"):
            table.add_column(column)
        with grpcclient.InferenceServerClient(address) as client:
            ok = all([_infer(client, sample, table) for sample in samples()])
            _stream(client, table)
            _error_cases(client, table)
            metadata = client.get_server_metadata()
        console.print(table)
        console.print(f"Server metadata through the gateway: {metadata.name} {metadata.version}")
        told = tell_the_rollout_story(console, address, gateway.admin_address)
        streamed = tell_the_streaming_story(console, address, workdir)
        console.print(f"took {time.monotonic() - started:.0f}s; the audit trail is in {workdir / 'audit.jsonl'}")
        return 0 if ok and told and streamed else 1
    finally:
        console.print(f"gateway exit code {gateway.stop()}, triton exit code {triton.stop()}")
