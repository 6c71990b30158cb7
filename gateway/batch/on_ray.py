"""Batch prediction past one machine: a callable class for Ray Data's `map_batches`.

```python
import ray
from gateway.batch.on_ray import GatewayPredictor

ds = ray.data.read_parquet("s3://bucket/records/")
predicted = ds.map_batches(GatewayPredictor, fn_constructor_kwargs={"model": "classifier",
                           "target": "gateway.ml.svc:8001"}, concurrency=8, batch_size=256)
predicted.write_parquet("s3://bucket/predictions/")
```

Each actor keeps one connection to the gateway; each block's rows go as batched requests (up to
the model's `max_batch_size` rows a request, `concurrency` requests in flight), at the gateway's
lowest priority class by default, so the admission queue keeps the job from starving real-time
traffic; shed or unavailable requests are retried, backing off from `retry-after-ms`, as `gateway
batch` does (the same code, `gateway.batch.calls`). A block comes back with its columns, one
column per output (each row's array), and `status` / `message` per row ("OK", or the gRPC status
of a row that failed for good): one bad row fails alone, never the block."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2_grpc

from gateway.batch import calls
from gateway.batch.calls import LOWEST_PRIORITY, CallOptions
from gateway.batch.records import Record

__all__ = ["GatewayPredictor"]


class GatewayPredictor:
    """`fn` of `Dataset.map_batches`, in an actor: a block of rows in, the rows and their
    predictions out."""

    def __init__(self, model: str, target: str = "127.0.0.1:8001", inputs: Sequence[str] | None = None,
                 version: str = "", priority: str = LOWEST_PRIORITY, concurrency: int = 4,
                 rows_per_request: int | None = None, max_retry_s: float = 300.0) -> None:  # fmt: skip
        self.options = CallOptions(model=model, target=target, version=version, priority=priority,
                                   max_retry_s=max_retry_s)  # fmt: skip
        self.concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._channel = self._loop.run_until_complete(self._connect())
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._stub = stub
        self._signature = self._loop.run_until_complete(calls.signature(stub, self.options))
        self._inputs = list(inputs) if inputs is not None else list(self._signature)
        batch = self._loop.run_until_complete(calls.max_batch_size(stub, self.options))
        self._rows = calls.rows_per_request(rows_per_request, self.options.max_request_bytes, batch, 0)

    async def _connect(self) -> grpc.aio.Channel:
        limits = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        return grpc.aio.insecure_channel(self.options.target, options=limits)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        missing = [name for name in self._inputs if name not in batch]
        if missing:
            raise KeyError(f"the block has no column {missing} (its columns: {sorted(batch)})")
        count = len(batch[self._inputs[0]]) if self._inputs else 0
        records = [Record(i, None, {name: batch[name][i] for name in self._inputs}) for i in range(count)]
        results = self._loop.run_until_complete(self._predict(records))
        out: dict[str, Any] = dict(batch)
        names = sorted({name for _, ok, line in results if ok for name in line["outputs"]})
        for name in names:
            out[name] = np.array([np.asarray(line["outputs"][name]) if ok else None for _, ok, line in results],
                                 dtype=object)  # fmt: skip
        out["status"] = np.array(["OK" if ok else str(line.get("code", "UNKNOWN")) for _, ok, line in results])
        out["message"] = np.array(["" if ok else str(line.get("message", "")) for _, ok, line in results])
        return out

    async def _predict(self, records: list[Record]) -> list[calls.Result]:
        lanes = asyncio.Semaphore(self.concurrency)

        async def chunk(part: list[Record]) -> list[calls.Result]:
            async with lanes:
                return await calls.several(self._stub, self.options, part, self._signature)

        parts = [records[i : i + self._rows] for i in range(0, len(records), self._rows)]
        done = await asyncio.gather(*(chunk(part) for part in parts))
        return [result for part in done for result in part]

    def __del__(self) -> None:
        try:
            self._loop.run_until_complete(self._channel.close(None))
            self._loop.close()
        except (RuntimeError, AttributeError):  # interpreter shutting down, or never connected
            pass
