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
import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from tritonclient.grpc import service_pb2_grpc

from gateway.batch import calls
from gateway.batch.calls import LOWEST_PRIORITY, CallOptions, ModelError, record_bytes, rows_per_request
from gateway.batch.manifest import Manifest
from gateway.batch.records import Record, RecordsError, count, fingerprint, read

__all__ = ["BatchError", "BatchOptions", "Summary", "run_batch"]


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
    def calls(self) -> CallOptions:
        """How each request is made."""
        return CallOptions(model=self.model, target=self.target, version=self.version, priority=self.priority,
                           timeout_s=self.timeout_s, max_retry_s=self.max_retry_s,
                           max_request_bytes=self.max_request_bytes)  # fmt: skip

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
            try:
                signature = await calls.signature(stub, options.calls)
            except ModelError as exc:
                raise BatchError(str(exc)) from exc
            max_batch_size = await calls.max_batch_size(stub, options.calls)
            with Progress(*columns, disable=not show_progress, transient=False) as progress:
                task = progress.add_task(options.model, total=manifest.records, completed=manifest.completed, rate=0.0)
                lanes = asyncio.Semaphore(options.concurrency)
                remaining = _remaining(options, manifest.completed)
                first = next(remaining, None)
                if not manifest.rows_per_request:  # chosen once a run: a resumed run forms the same requests
                    size = record_bytes(options.calls, first, signature) if first else 0
                    manifest.rows_per_request = rows_per_request(options.rows_per_request, options.max_request_bytes,
                                                                 max_batch_size, size)  # fmt: skip
                rows = manifest.rows_per_request
                window = asyncio.Semaphore(options.concurrency * max(rows, 4) * 2)  # records sent, not yet written
                writer.align = rows

                async def handle(records: list[Record]) -> None:
                    async with lanes:
                        results = await calls.several(stub, options.calls, records, signature)
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
