"""Runs a batch: records read in order, sent with bounded concurrency (at the lowest priority
through the gateway), results written in input order (a reorder buffer holds the ones that came
back early), the files synced and the manifest saved every few hundred records. A killed run
resumed with `resume=True` truncates what came after its last checkpoint and goes on from
there, so every record gets exactly one result: a line in the output, or in the failures file.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tritonclient.grpc import InferResult, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from gateway.batch.backoff import Backoff, retry_after_ms
from gateway.batch.manifest import Manifest
from gateway.batch.records import Record, RecordsError, count, fingerprint, read

__all__ = ["BatchError", "BatchOptions", "Summary", "run_batch"]

LOWEST_PRIORITY = "999999"  # the gateway clamps it to its lowest configured class
_RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


class BatchError(Exception):
    """The run cannot start (the message says why and what to do)."""


@dataclass(frozen=True)
class BatchOptions:
    model: str
    input: Path
    output: Path
    target: str = "127.0.0.1:8001"
    version: str = ""
    concurrency: int = 8
    priority: str = LOWEST_PRIORITY  # x-priority; "" sends none (straight to a v2 server)
    resume: bool = False
    timeout_s: float = 60.0
    max_retry_s: float = 60.0  # per record: retries back off exponentially within this
    checkpoint_every: int = 200

    @property
    def failures(self) -> Path:
        return self.output.with_name(self.output.name + ".failures.jsonl")

    @property
    def manifest(self) -> Path:
        return self.output.with_name(self.output.name + ".manifest.json")


@dataclass(frozen=True)
class Summary:
    records: int
    succeeded: int
    failed: int
    resumed_from: int
    seconds: float

    @property
    def rate(self) -> float:
        return (self.records - self.resumed_from) / self.seconds if self.seconds else 0.0


Signature = dict[str, tuple[str, list[int]]]  # input -> (datatype, shape)


def request_for(options: BatchOptions, record: Record, signature: Signature) -> tuple[pb.ModelInferRequest, bool]:
    """The record's request, and whether a batch dimension was added (then it is cut off again)."""
    request = pb.ModelInferRequest(model_name=options.model, model_version=options.version)
    batched = False
    for name, value in record.inputs.items():
        if name not in signature:
            raise ValueError(f"input {name!r} is not one of the model's ({sorted(signature)})")
        datatype, shape = signature[name]
        if datatype == "BYTES":
            array = np.array(value, dtype=np.object_)
            array = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[np.object_])(array)
        else:
            array = np.asarray(value, dtype=triton_to_np_dtype(datatype))
        if len(shape) == array.ndim + 1:
            array, batched = array[None], True
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        assert tensor is not None
        raw = serialize_byte_tensor(array) if datatype == "BYTES" else array
        request.raw_input_contents.append(raw.tobytes())
    return request, batched


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == np.object_:
        return np.vectorize(lambda v: v.decode(errors="replace") if isinstance(v, bytes) else v, otypes=[object])(
            array
        ).tolist()
    return array.tolist()


def result_line(record: Record, response: pb.ModelInferResponse, batched: bool) -> dict[str, Any]:
    result = InferResult(response)
    outputs = {}
    for output in response.outputs:
        array = result.as_numpy(output.name)
        outputs[output.name] = _jsonable(array[0] if batched and array.shape[:1] == (1,) else array)
    return {"index": record.index, "custom_id": record.custom_id, "model_version": response.model_version,
            "outputs": outputs}  # fmt: skip


class _Writer:
    """Results in input order; synced, then the manifest saved, at every checkpoint."""

    def __init__(self, options: BatchOptions, manifest: Manifest) -> None:
        self.options, self.manifest = options, manifest
        self.outputs: IO[str] = _open_at(options.output, manifest.outputs_bytes)
        self.failures: IO[str] = _open_at(options.failures, manifest.failures_bytes)
        self.pending: dict[int, tuple[bool, dict[str, Any]]] = {}
        self._since = 0

    def put(self, index: int, ok: bool, line: dict[str, Any]) -> int:
        """Writes what is now in order; how many records that was."""
        self.pending[index] = (ok, line)
        written = 0
        while self.manifest.completed in self.pending:
            ok, line = self.pending.pop(self.manifest.completed)
            (self.outputs if ok else self.failures).write(json.dumps(line) + "\n")
            self.manifest.completed += 1
            self.manifest.succeeded += ok
            self.manifest.failed += not ok
            written += 1
        self._since += written
        if self._since >= self.options.checkpoint_every:
            self.checkpoint()
        return written

    def checkpoint(self) -> None:
        for handle in (self.outputs, self.failures):
            handle.flush()
            os.fsync(handle.fileno())
        self.manifest.outputs_bytes, self.manifest.failures_bytes = self.outputs.tell(), self.failures.tell()
        self.manifest.save(self.options.manifest)
        self._since = 0

    def close(self) -> None:
        self.checkpoint()
        self.outputs.close()
        self.failures.close()


def _open_at(path: Path, valid_bytes: int) -> IO[str]:
    """Open for appending after the last checkpoint: anything written past it is dropped."""
    handle = path.open("a+")
    handle.truncate(valid_bytes)
    handle.seek(valid_bytes)
    return handle


def _start(options: BatchOptions) -> Manifest:
    if not options.input.exists():
        raise BatchError(f"{options.input}: no such file")
    digest = fingerprint(options.input)
    if options.resume and options.manifest.exists():
        manifest = Manifest.load(options.manifest)
        if (manifest.input_sha256, manifest.model) != (digest, options.model):
            raise BatchError(f"{options.manifest} belongs to another input or model: cannot resume it with these")
        return manifest
    if options.output.exists() and options.output.stat().st_size and not options.resume:
        raise BatchError(f"{options.output} exists: pass --resume to carry on its run, or remove it")
    manifest = Manifest(str(options.input), digest, options.model, count(options.input))
    manifest.save(options.manifest)
    return manifest


async def _signature(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: BatchOptions) -> Signature:
    request = pb.ModelMetadataRequest(name=options.model, version=options.version)
    try:
        metadata = await stub.ModelMetadata(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise BatchError(f"model {options.model!r} at {options.target}: {exc.code().name}: {exc.details()}") from exc
    return {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}


def _failure(record: Record, code: str, message: str, **extra: Any) -> dict[str, Any]:
    line = {"index": record.index, "custom_id": record.custom_id, "code": code, "message": message, **extra}
    return line | ({"line": record.line} if record.line is not None else {})


async def _one(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: BatchOptions, record: Record,
               signature: Signature) -> tuple[bool, dict[str, Any]]:  # fmt: skip
    if record.problem is not None:
        return False, _failure(record, "INVALID_ARGUMENT", f"not sent: {record.problem}")
    try:
        request, batched = request_for(options, record, signature)
    except (ValueError, TypeError) as exc:
        return False, _failure(record, "INVALID_ARGUMENT", f"not sent: {exc}")
    metadata = (("x-priority", options.priority),) if options.priority else ()
    backoff, waited, attempt = Backoff(options.max_retry_s), 0.0, 0
    while True:
        try:
            response = await stub.ModelInfer(request, metadata=metadata, timeout=options.timeout_s)
            return True, result_line(record, response, batched)
        except grpc.aio.AioRpcError as exc:
            delay = backoff.delay(attempt, retry_after_ms(exc.trailing_metadata()))
            if exc.code() not in _RETRIED or not backoff.allows(waited, delay):
                return False, _failure(record, exc.code().name, exc.details() or "", attempts=attempt + 1)
            await asyncio.sleep(delay)
            waited, attempt = waited + delay, attempt + 1


def _remaining(options: BatchOptions, completed: int) -> Iterator[Record]:
    return (record for record in read(options.input) if record.index >= completed)


async def run_batch(options: BatchOptions, show_progress: bool = True) -> Summary:
    manifest = _start(options)
    resumed_from, started = manifest.completed, time.monotonic()
    writer = _Writer(options, manifest)
    window = asyncio.Semaphore(options.concurrency * 8)  # records sent but not yet written, at most
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.0f} records/s"), TimeRemainingColumn())  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(options.target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            signature = await _signature(stub, options)
            with Progress(*columns, disable=not show_progress, transient=False) as progress:
                task = progress.add_task(options.model, total=manifest.records, completed=manifest.completed, rate=0.0)
                lanes = asyncio.Semaphore(options.concurrency)

                async def handle(record: Record) -> None:
                    async with lanes:
                        ok, line = await _one(stub, options, record, signature)
                    written = writer.put(record.index, ok, line)
                    for _ in range(written):
                        window.release()
                    elapsed = time.monotonic() - started
                    progress.update(task, completed=manifest.completed,
                                    rate=(manifest.completed - resumed_from) / elapsed if elapsed else 0.0)  # fmt: skip

                try:
                    async with asyncio.TaskGroup() as group:
                        for record in _remaining(options, manifest.completed):
                            await window.acquire()
                            group.create_task(handle(record))
                except* RecordsError as unreadable:  # the file itself, midway: what was written stays
                    raise unreadable.exceptions[0] from None
    finally:
        writer.close()
    return Summary(manifest.records, manifest.succeeded, manifest.failed, resumed_from, time.monotonic() - started)
