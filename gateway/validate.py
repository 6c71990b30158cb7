"""Check a ModelInferRequest against the model's signature before any upstream time is spent.

Mirrors the checks Triton itself makes (names, datatypes, shapes, byte sizes), so a request the
gateway lets through is one Triton would accept, and a bad one never reaches a GPU.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from tritonclient.grpc import service_pb2

from gateway.errors import InvalidRequest
from gateway.signature import ModelSignature, TensorSpec
from gateway.wire import Tensor

__all__ = ["ELEMENT_BYTES", "validate_infer_request"]

ELEMENT_BYTES: dict[str, int] = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
}

# Which typed field of InferTensorContents carries each datatype (FP16/BF16 travel raw only).
_CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def _fail(model: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"model '{model}': {message}")


def _count_bytes_elements(raw: Tensor) -> int | None:
    """Number of length-prefixed strings in a raw BYTES tensor, or None if it is malformed."""
    offset, count, size = 0, 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            return None
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4 + length
        count += 1
    return count if offset == size else None


def _check_shape(model: str, spec: TensorSpec, shape: tuple[int, ...], max_batch_size: int) -> None:
    expected = spec.shape
    exact = shape == expected and -1 not in expected  # the common case, without a loop in Python
    matches = exact or (len(shape) == len(expected) and all(e in (-1, s) for e, s in zip(expected, shape, strict=True)))
    if not matches or (not exact and any(dim < 0 for dim in shape)):
        raise _fail(model, f"input '{spec.name}' has shape {list(shape)}, expected {list(expected)} (-1: any size)")
    if max_batch_size > 0 and shape and shape[0] > max_batch_size:
        raise _fail(model, f"input '{spec.name}' batch size {shape[0]} exceeds max_batch_size {max_batch_size}")


def _check_raw_size(model: str, spec: TensorSpec, elements: int, raw: Tensor) -> None:
    if spec.datatype == "BYTES":
        found = _count_bytes_elements(raw)
        if found != elements:
            got = "malformed length prefixes" if found is None else f"{found} strings"
            raise _fail(model, f"input '{spec.name}' holds {got}, expected {elements} strings")
        return
    expected = elements * ELEMENT_BYTES[spec.datatype]
    if len(raw) != expected:
        raise _fail(model, f"input '{spec.name}' has {len(raw)} bytes, expected {expected} for its shape")


def _check_typed_size(
    model: str, spec: TensorSpec, elements: int, tensor: service_pb2.ModelInferRequest.InferInputTensor
) -> None:
    field = _CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        raise _fail(model, f"input '{spec.name}' of type {spec.datatype} must be sent in raw_input_contents")
    found = len(getattr(tensor.contents, field))
    if found != elements:
        raise _fail(model, f"input '{spec.name}' has {found} values in contents.{field}, expected {elements}")


def validate_infer_request(
    request: service_pb2.ModelInferRequest, signature: ModelSignature, tensors: Sequence[Tensor] | None = None
) -> None:
    """`tensors`: the raw inputs when they were kept out of `request` (gateway.wire)."""
    model = request.model_name
    raw = request.raw_input_contents if tensors is None else tensors
    if raw and len(raw) != len(request.inputs):
        raise _fail(model, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    seen: set[str] = set()
    for index, tensor in enumerate(request.inputs):
        spec = signature.inputs.get(tensor.name)
        if spec is None:
            raise _fail(model, f"unknown input '{tensor.name}' (inputs: {sorted(signature.inputs)})")
        if tensor.name in seen:
            raise _fail(model, f"input '{tensor.name}' is given twice")
        seen.add(tensor.name)
        if tensor.parameters and any(key in tensor.parameters for key in _SHARED_MEMORY_KEYS):
            raise _fail(model, f"input '{tensor.name}' uses shared memory, which the gateway cannot proxy")
        if tensor.datatype != spec.datatype:
            raise _fail(model, f"input '{tensor.name}' has datatype {tensor.datatype}, expected {spec.datatype}")
        shape = tuple(tensor.shape)
        _check_shape(model, spec, shape, signature.max_batch_size)
        elements = math.prod(shape)
        if raw:
            _check_raw_size(model, spec, elements, raw[index])
        else:
            _check_typed_size(model, spec, elements, tensor)
    missing = sorted(name for name, spec in signature.inputs.items() if not spec.optional and name not in seen)
    if missing:
        raise _fail(model, f"missing required input(s) {missing}")
    for output in request.outputs:
        if output.name not in signature.outputs:
            raise _fail(model, f"unknown output '{output.name}' requested (outputs: {sorted(signature.outputs)})")
        if output.parameters and any(key in output.parameters for key in _SHARED_MEMORY_KEYS):
            raise _fail(model, f"output '{output.name}' uses shared memory, which the gateway cannot proxy")
