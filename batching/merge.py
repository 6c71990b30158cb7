"""Merge ModelInferRequests along the batch dimension and slice the answer back (pure, no numpy).

Requests merge only when they would mean the same thing as one call: same model and version,
same inputs (names, datatypes, every dimension but the first, parameters), same requested outputs,
same request parameters, and all tensors in `raw_input_contents`. Raw tensors are row-major, so
concatenating the callers' bytes is concatenating along dimension 0, for BYTES too (each element
carries its own 4-byte length prefix). Outputs are cut at row boundaries: by byte count for fixed
size datatypes, by walking length prefixes for BYTES.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Hashable, Sequence
from typing import Any

from tritonclient.grpc import service_pb2

Tensor = bytes | memoryview  # a raw tensor, possibly a view of the caller's bytes

__all__ = ["MergeError", "Tensor", "merge", "merge_key", "rows", "split"]

# Sequence requests carry state in Triton's sequence batcher: never merged.
_UNMERGEABLE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})


class MergeError(Exception):
    """The merged answer cannot be cut back into the callers' answers."""


def _parameters(parameters: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple(sorted((name, value.SerializeToString(deterministic=True)) for name, value in parameters.items()))


def rows(request: service_pb2.ModelInferRequest) -> int | None:
    """The request's batch size: the first dimension every input shares, or None without one."""
    sizes = {tensor.shape[0] if tensor.shape else None for tensor in request.inputs}
    if len(sizes) != 1:
        return None
    (size,) = sizes
    return size if size is not None and size > 0 else None


def merge_key(request: service_pb2.ModelInferRequest, tensors: Sequence[Tensor]) -> Hashable | None:
    """What must be equal for requests to share an upstream call; None: this one goes alone.
    `tensors`: the request's raw inputs (kept apart from the parsed message, or its own)."""
    if not request.inputs or len(tensors) != len(request.inputs) or rows(request) is None:
        return None
    if _UNMERGEABLE_PARAMETERS.intersection(request.parameters):
        return None
    inputs = tuple(
        sorted(
            (tensor.name, tensor.datatype, tuple(tensor.shape[1:]), _parameters(tensor.parameters))
            for tensor in request.inputs
        )
    )
    outputs = tuple(sorted((output.name, _parameters(output.parameters)) for output in request.outputs))
    return request.model_name, request.model_version, inputs, outputs, _parameters(request.parameters)


def merge(
    requests: Sequence[service_pb2.ModelInferRequest], tensors: Sequence[Sequence[Tensor]]
) -> service_pb2.ModelInferRequest:
    """One request holding every caller's rows, in order. All must have the same merge_key."""
    first = requests[0]
    merged = service_pb2.ModelInferRequest(model_name=first.model_name, model_version=first.model_version)
    for name, value in first.parameters.items():
        merged.parameters[name].CopyFrom(value)
    merged.outputs.extend(first.outputs)
    total = sum(rows(request) or 0 for request in requests)
    positions = [{tensor.name: index for index, tensor in enumerate(request.inputs)} for request in requests]
    for tensor in first.inputs:
        merged_tensor = merged.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=[total, *tensor.shape[1:]])
        for name, value in tensor.parameters.items():
            merged_tensor.parameters[name].CopyFrom(value)
        merged.raw_input_contents.append(
            b"".join(raw[where[tensor.name]] for raw, where in zip(tensors, positions, strict=True))
        )
    return merged


def _bytes_row_ends(raw: bytes, elements_per_row: int, total_rows: int, output: str) -> list[int]:
    """Byte offsets where each row of a raw BYTES tensor ends."""
    ends, offset, size = [], 0, len(raw)
    for _ in range(total_rows):
        for _ in range(elements_per_row):
            if offset + 4 > size:
                raise MergeError(f"output '{output}': BYTES tensor ends inside a length prefix")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4 + length
        ends.append(offset)
    if offset != size:
        raise MergeError(f"output '{output}': BYTES tensor is {size} bytes, its elements end at {offset}")
    return ends


def _row_ends(output: service_pb2.ModelInferResponse.InferOutputTensor, raw: bytes, total_rows: int) -> list[int]:
    if not output.shape or output.shape[0] != total_rows:
        raise MergeError(f"output '{output.name}' has shape {list(output.shape)}, expected {total_rows} rows first")
    if output.datatype == "BYTES":
        return _bytes_row_ends(raw, math.prod(output.shape[1:]), total_rows, output.name)
    row_bytes, remainder = divmod(len(raw), total_rows)
    if remainder:
        raise MergeError(f"output '{output.name}': {len(raw)} bytes do not divide into {total_rows} rows")
    return [row_bytes * (row + 1) for row in range(total_rows)]


def split(
    response: service_pb2.ModelInferResponse, requests: Sequence[service_pb2.ModelInferRequest]
) -> list[service_pb2.ModelInferResponse]:
    """Each caller's answer, cut out of the merged one: its rows, its request id."""
    sizes = [rows(request) or 0 for request in requests]
    total = sum(sizes)
    if len(response.raw_output_contents) != len(response.outputs):
        raise MergeError("the merged answer does not carry its outputs in raw_output_contents")
    outputs = list(zip(response.outputs, response.raw_output_contents, strict=True))
    cuts = [_row_ends(output, raw, total) for output, raw in outputs]
    answers = []
    first_row = 0
    for request, size in zip(requests, sizes, strict=True):
        answer = service_pb2.ModelInferResponse(
            model_name=response.model_name, model_version=response.model_version, id=request.id
        )
        for name, value in response.parameters.items():
            answer.parameters[name].CopyFrom(value)
        for (output, raw), ends in zip(outputs, cuts, strict=True):
            start = ends[first_row - 1] if first_row else 0
            tensor = answer.outputs.add(name=output.name, datatype=output.datatype, shape=[size, *output.shape[1:]])
            for name, value in output.parameters.items():
                tensor.parameters[name].CopyFrom(value)
            answer.raw_output_contents.append(raw[start : ends[first_row + size - 1]])
        answers.append(answer)
        first_row += size
    return answers
