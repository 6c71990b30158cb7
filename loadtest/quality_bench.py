"""What model-quality monitoring costs, and how fast batch prediction goes:

- drift statistics per sampled request: the digits' 64 pixels and the prediction read from a
  sampled observation (base64 request, protobuf, numpy) and fed to the monitor, windows closing
  every 500 samples (PSI + KS over 66 features), timed in this process;
- `gateway batch` against perf_analyzer on the same model (`classifier` v1, straight to a real
  Triton, both at concurrency 8), in one run.

    python -m loadtest.quality_bench [--records 5000] [--out results]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tritonclient.grpc import service_pb2 as pb

from gateway.batch.runner import BatchOptions, run_batch
from gateway.config.schema import parse_config
from gateway.drift.loop import Drift
from gateway.local.processes import free_port
from gateway.local.samples import digits
from gateway.local.triton import TritonOptions, TritonProcess
from loadtest import perf_analyzer

__all__ = ["batch_against_perf_analyzer", "drift_cost"]


def _observation(pixels: np.ndarray, cls: int) -> dict[str, Any]:
    request = pb.ModelInferRequest(model_name="classifier")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(pixels.astype(np.float32).tobytes())
    return {"method": "ModelInfer", "code": "OK", "model": "classifier", "variant": "1",
            "request": base64.b64encode(request.SerializeToString()).decode(),
            "prediction": {"class": cls, "top": 0.9}}  # fmt: skip


def drift_cost(samples: int = 20_000) -> dict[str, float]:
    config = parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}},
                           "drift": {"enabled": True, "reference_samples": 1000, "window_samples": 500}})  # fmt: skip
    drift = Drift(config, lambda model: "1", None)
    data = digits()
    observations = [_observation(data["pixels"][i % 300], int(data["class_v1"][i % 300])) for i in range(samples)]
    started = time.perf_counter()
    asyncio.run(drift.consume(observations))
    elapsed = time.perf_counter() - started
    windows = sum(state.windows for state in drift.monitor.variants.values())
    return {"samples": samples, "windows": windows, "us_per_sample": elapsed / samples * 1e6,
            "features": len(drift.monitor.references["classifier"].features)}  # fmt: skip


def batch_against_perf_analyzer(records: int, concurrency: int = 8) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="quality-bench-"))
    triton = TritonProcess(TritonOptions(grpc_port=free_port()))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    try:
        triton.wait_ready()
        address = triton.options.grpc_target
        inputs = workdir / "digits.npz"
        np.savez(inputs, INPUT0=np.tile(digits()["pixels"].astype(np.float32), (records // 300 + 1, 1))[:records])
        summaries = {}
        for rows in (1, None):  # one record a request; as many as the model batches (its max_batch_size)
            options = BatchOptions(model="classifier", version="1", input=inputs, target=address, priority="",
                                   output=workdir / f"out-{rows}.jsonl", concurrency=concurrency,
                                   rows_per_request=rows)  # fmt: skip
            summaries[rows] = asyncio.run(run_batch(options, show_progress=False))
        direct = perf_analyzer.measure(address, "classifier", "INPUT0:64", concurrency)
    finally:
        triton.stop()
    merged, single = summaries[None], summaries[1]
    return {"records": records, "batch_per_s": merged.rate, "one_per_request_per_s": single.rate,
            "perf_analyzer_per_s": direct.throughput, "ratio": merged.rate / direct.throughput,
            "one_per_request_ratio": single.rate / direct.throughput,
            "failed": merged.failed + single.failed}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    result = {"drift": drift_cost(), "batch": batch_against_perf_analyzer(args.records)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality_bench.json").write_text(json.dumps(result, indent=1))
    table = Table(title="model-quality costs")
    table.add_column("what")
    table.add_column("measured")
    d, b = result["drift"], result["batch"]
    table.add_row(
        "drift statistics per sampled request",
        f"{d['us_per_sample']:.0f} µs ({d['features']:.0f} features, {d['windows']:.0f} windows closed)",
    )
    table.add_row(
        "gateway batch, classifier v1, c=8, rows per request: the model's max", f"{b['batch_per_s']:.0f} records/s"
    )
    table.add_row("gateway batch, the same, one record per request", f"{b['one_per_request_per_s']:.0f} records/s")
    table.add_row("perf_analyzer, same model, c=8", f"{b['perf_analyzer_per_s']:.0f} inferences/s")
    table.add_row("batch / perf_analyzer (one per request)", f"{b['ratio']:.2f}x ({b['one_per_request_ratio']:.2f}x)")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
