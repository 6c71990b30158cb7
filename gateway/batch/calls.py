"""Records through a model: a record's request, several records merged into one request and the
answer cut back per record (a request that fails is retried record by record, so a bad record
fails alone), shed or unavailable requests retried with back-off (by `retry-after-ms` when the
gateway gives one). Shared by `gateway batch` and `gateway stream`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import InferResult, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from gateway.batch.backoff import Backoff, retry_after_ms
from gateway.batch.merge import merge, merge_key, split
from gateway.batch.records import Record

__all__ = ["LOWEST_PRIORITY", "RETRIED", "CallOptions", "ModelError", "Result", "Signature", "max_batch_size",
           "record_bytes", "request_for", "result_line", "rows_per_request", "several", "signature"]  # fmt: skip

LOWEST_PRIORITY = "999999"  # the gateway clamps it to its lowest configured class
RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}


class ModelError(Exception):
    """The model cannot be asked about (the message names it, the server and the status)."""


@dataclass(frozen=True)
class CallOptions:
    model: str
    target: str = "127.0.0.1:8001"
    version: str = ""
    priority: str = LOWEST_PRIORITY  # x-priority; "" sends none (straight to a v2 server)
    timeout_s: float = 60.0
    max_retry_s: float = 60.0  # per record: retries back off exponentially within this
    max_request_bytes: int = 4 << 20  # a request's inputs at most (fewer records when they are large)


Signature = dict[str, tuple[str, list[int]]]  # input -> (datatype, shape)


def request_for(options: CallOptions, record: Record, signature: Signature) -> tuple[pb.ModelInferRequest, bool]:
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


async def signature(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: CallOptions) -> Signature:
    request = pb.ModelMetadataRequest(name=options.model, version=options.version)
    try:
        metadata = await stub.ModelMetadata(request, timeout=30)
    except grpc.aio.AioRpcError as exc:
        raise ModelError(f"model {options.model!r} at {options.target}: {exc.code().name}: {exc.details()}") from exc
    return {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}


async def max_batch_size(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: CallOptions) -> int:
    """The model's max_batch_size (0: no batch dimension, or a server without ModelConfig)."""
    request = pb.ModelConfigRequest(name=options.model, version=options.version)
    try:
        return int((await stub.ModelConfig(request, timeout=30)).config.max_batch_size)
    except grpc.aio.AioRpcError:
        return 0


def _failure(record: Record, code: str, message: str, **extra: Any) -> dict[str, Any]:
    line = {"index": record.index, "custom_id": record.custom_id, "code": code, "message": message, **extra}
    return line | ({"line": record.line} if record.line is not None else {})


async def _one(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: CallOptions, record: Record,
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


async def _call(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: CallOptions, request: pb.ModelInferRequest,
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
            if exc.code() not in RETRIED or _too_large(exc) or not backoff.allows(waited, delay):
                return None, exc, attempt + 1
            await asyncio.sleep(delay)
            waited, attempt = waited + delay, attempt + 1


def _too_large(error: grpc.aio.AioRpcError) -> bool:
    """RESOURCE_EXHAUSTED without retry-after-ms: a message over a size limit, not shedding (no
    retry helps it; a merged request's records go again one by one)."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_ms(error.trailing_metadata()) is None


Result = tuple[Record, bool, dict[str, Any]]  # the record, whether it succeeded, its line


async def several(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: CallOptions, records: list[Record],
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
        if error is not None and error.code() in RETRIED and not _too_large(error):
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


def rows_per_request(wanted: int | None, max_request_bytes: int, max_batch_size: int, record_bytes: int) -> int:
    """Records in one request: the `wanted` number (else the model's max), never past the model's
    max, nor past the byte budget; 1 for a model without a batch dimension."""
    if max_batch_size <= 0:
        return 1
    rows = min(wanted or max_batch_size, max_batch_size)
    return max(1, min(rows, max_request_bytes // max(record_bytes, 1)))


def _input_bytes(request: pb.ModelInferRequest) -> int:
    return sum(len(raw) for raw in request.raw_input_contents)


def record_bytes(options: CallOptions, record: Record, signature: Signature) -> int:
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
