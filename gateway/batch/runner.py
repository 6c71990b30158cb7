"""Runs a batch: records read in order, sent with bounded concurrency (at the lowest priority
through the gateway), several to a request for a model with a batch dimension (up to its
`max_batch_size`, within a byte budget; a request that fails is retried record by record, so a bad
record fails alone), results written in input order (a reorder buffer holds the ones that came
back early), the files synced and the manifest saved every few hundred records. A killed run
resumed with `resume=True` truncates what came after its last checkpoint and goes on from
there, so every record gets exactly one result: a line in the output, or in the failures file.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
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
from gateway.batch.merge import merge, merge_key, split
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
    rows_per_request: int | None = None  # records in one request; None: the model's max_batch_size
    max_request_bytes: int = 4 << 20  # a request's inputs at most (fewer records when they are large)

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
    arrays = {output.name: result.as_numpy(output.name) for output in response.outputs}
    return _line(record, arrays, response.model_version, batched)


def _line(record: Record, arrays: dict[str, Any], version: str, batched: bool) -> dict[str, Any]:
    """A record's result; `batched`: its request added the batch dimension, taken off again here."""
    outputs = {name: _jsonable(a[0] if batched and a.shape[:1] == (1,) else a) for name, a in arrays.items()}
    return {"index": record.index, "custom_id": record.custom_id, "model_version": version, "outputs": outputs}


class _Writer:
    """Results in input order; synced, then the manifest saved, at every checkpoint (one every
    `checkpoint_every` records or so, where a request's stretch of records ends)."""

    def __init__(self, options: BatchOptions, manifest: Manifest) -> None:
        self.options, self.manifest = options, manifest
        self.align = 1  # checkpoints fall where a request's stretch of records ends
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
        if self._since >= self.options.checkpoint_every and self.manifest.completed % self.align == 0:
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


async def _max_batch_size(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: BatchOptions) -> int:
    """The model's max_batch_size (0: no batch dimension, or a server without ModelConfig)."""
    request = pb.ModelConfigRequest(name=options.model, version=options.version)
    try:
        return int((await stub.ModelConfig(request, timeout=30)).config.max_batch_size)
    except grpc.aio.AioRpcError:
        return 0


def rows_per_request(options: BatchOptions, max_batch_size: int, record_bytes: int) -> int:
    """Records in one request: the asked number (else the model's max), never past the model's
    max, nor past the byte budget; 1 for a model without a batch dimension."""
    if max_batch_size <= 0:
        return 1
    wanted = min(options.rows_per_request or max_batch_size, max_batch_size)
    return max(1, min(wanted, options.max_request_bytes // max(record_bytes, 1)))


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
    response, error, attempts = await _call(stub, options, request)
    if error is not None:
        return False, _failure(record, error.code().name, error.details() or "", attempts=attempts)
    assert response is not None
    return True, result_line(record, response, batched)


async def _call(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: BatchOptions, request: pb.ModelInferRequest,
                ) -> tuple[pb.ModelInferResponse | None, grpc.aio.AioRpcError | None, int]:  # fmt: skip
    """The answer, or the error it ended with, and the attempts made: shed, unavailable or timed
    out requests are sent again, backing off (by retry-after-ms when the gateway gives one)."""
    metadata = (("x-priority", options.priority),) if options.priority else ()
    backoff, waited, attempt = Backoff(options.max_retry_s), 0.0, 0
    while True:
        try:
            return await stub.ModelInfer(request, metadata=metadata, timeout=options.timeout_s), None, attempt + 1
        except grpc.aio.AioRpcError as exc:
            delay = backoff.delay(attempt, retry_after_ms(exc.trailing_metadata()))
            if exc.code() not in _RETRIED or _too_large(exc) or not backoff.allows(waited, delay):
                return None, exc, attempt + 1
            await asyncio.sleep(delay)
            waited, attempt = waited + delay, attempt + 1


def _too_large(error: grpc.aio.AioRpcError) -> bool:
    """RESOURCE_EXHAUSTED without retry-after-ms: a message over a size limit, not shedding (no
    retry helps it; a merged request's records go again one by one)."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(error.trailing_metadata()) is None


Result = tuple[Record, bool, dict[str, Any]]


async def _several(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: BatchOptions, records: list[Record],
                   signature: Signature) -> list[Result]:  # fmt: skip
    """The records' results: those that share a merge key with the first go as one request,
    the others (and all of them, when the merged one fails) one by one."""
    built = []
    for record in records:
        if record.problem is None:
            with contextlib.suppress(ValueError, TypeError):  # such a record fails alone, below, with its reason
                built.append((record, *request_for(options, record, signature)))
    key = merge_key(built[0][1]) if built else None
    together = [b for b in built if key is not None and merge_key(b[1]) == key]
    results: dict[int, Result] = {}
    for group in _within_budget(together, options.max_request_bytes):
        if len(group) < 2:
            continue
        response, error, attempts = await _call(stub, options, merge([request for _, request, _ in group]))
        if error is not None and error.code() in _RETRIED and not _too_large(error):
            for record, _, _ in group:  # retried past --max-retry-s: each record failed as it would have alone
                results[record.index] = (record, False, _failure(record, error.code().name, error.details() or "",
                                                                 attempts=attempts))  # fmt: skip
            continue
        rows = split(response, len(group)) if response is not None else None
        for (record, _, batched), arrays in zip(group, rows or [], strict=False):
            assert response is not None
            results[record.index] = (record, True, _line(record, arrays, response.model_version, batched))
    for record in records:
        if record.index not in results:
            results[record.index] = (record, *await _one(stub, options, record, signature))
    return [results[record.index] for record in records]


def _input_bytes(request: pb.ModelInferRequest) -> int:
    return sum(len(raw) for raw in request.raw_input_contents)


def _size(options: BatchOptions, record: Record, signature: Signature) -> int:
    """A record's input bytes (0 when it cannot be sent)."""
    try:
        request, _ = request_for(options, record, signature)
    except (ValueError, TypeError):
        return 0
    return _input_bytes(request)


def _within_budget(built: list[tuple[Record, pb.ModelInferRequest, bool]], budget: int,
                   ) -> Iterator[list[tuple[Record, pb.ModelInferRequest, bool]]]:  # fmt: skip
    """`built` in consecutive groups whose inputs stay within `budget` bytes (a record over it
    alone)."""
    group: list[tuple[Record, pb.ModelInferRequest, bool]] = []
    size = 0
    for entry in built:
        own = _input_bytes(entry[1])
        if group and size + own > budget:
            yield group
            group, size = [], 0
        group.append(entry)
        size += own
    if group:
        yield group


def _remaining(options: BatchOptions, completed: int) -> Iterator[Record]:
    return (record for record in read(options.input) if record.index >= completed)


async def run_batch(options: BatchOptions, show_progress: bool = True) -> Summary:
    manifest = _start(options)
    resumed_from, started = manifest.completed, time.monotonic()
    writer = _Writer(options, manifest)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.0f} records/s"), TimeRemainingColumn())  # fmt: skip
    try:
        # Merged requests and their answers are `rows` times larger than one record's: no client
        # limit below the server's own (the gateway's max_message_bytes).
        limits = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        async with grpc.aio.insecure_channel(options.target, options=limits) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            signature = await _signature(stub, options)
            max_batch_size = await _max_batch_size(stub, options)
            with Progress(*columns, disable=not show_progress, transient=False) as progress:
                task = progress.add_task(options.model, total=manifest.records, completed=manifest.completed, rate=0.0)
                lanes = asyncio.Semaphore(options.concurrency)
                remaining = _remaining(options, manifest.completed)
                first = next(remaining, None)
                if not manifest.rows_per_request:  # chosen once a run: a resumed run forms the same requests
                    record_bytes = _size(options, first, signature) if first else 0
                    manifest.rows_per_request = rows_per_request(options, max_batch_size, record_bytes)
                rows = manifest.rows_per_request
                window = asyncio.Semaphore(options.concurrency * max(rows, 4) * 2)  # records sent, not yet written
                writer.align = rows

                async def handle(records: list[Record]) -> None:
                    async with lanes:
                        results = await _several(stub, options, records, signature)
                    written = sum(writer.put(record.index, ok, line) for record, ok, line in results)
                    for _ in range(written):
                        window.release()
                    elapsed = time.monotonic() - started
                    progress.update(task, completed=manifest.completed,
                                    rate=(manifest.completed - resumed_from) / elapsed if elapsed else 0.0)  # fmt: skip

                try:
                    async with asyncio.TaskGroup() as group:
                        chunk: list[Record] = []
                        for record in itertools.chain([first] if first else [], remaining):
                            await window.acquire()
                            chunk.append(record)
                            # Requests hold the records of one stretch of `rows` indexes: a resumed
                            # run forms the same ones, so its answers are the same to the bit.
                            if (record.index + 1) % rows == 0:
                                group.create_task(handle(chunk))
                                chunk = []
                        if chunk:
                            group.create_task(handle(chunk))
                except* RecordsError as unreadable:  # the file itself, midway: what was written stays
                    raise unreadable.exceptions[0] from None
    finally:
        writer.close()
    return Summary(manifest.records, manifest.succeeded, manifest.failed, resumed_from, time.monotonic() - started)
