"""Cache keys: a 128-bit BLAKE2b digest of everything that determines a model's outputs.

Covered: the resolved upstream model name and version; each input's name, datatype, shape and
contents; the requested outputs with their parameters; the request parameters that can change
outputs (everything but those named in `ignored_parameters`: priority, timeouts, trace context).
Input order does not matter, and a tensor sent in `raw_input_contents` hashes the same as the
same tensor sent as typed `contents`. Fields are length-prefixed so no two different requests
can feed the hash the same byte stream.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection, Iterable, Sequence
from typing import Any

__all__ = ["DEFAULT_IGNORED_PARAMETERS", "KEY_BYTES", "cache_key", "canonical_contents"]

KEY_BYTES = 16
DEFAULT_IGNORED_PARAMETERS: frozenset[str] = frozenset(
    {"priority", "timeout", "traceparent", "tracestate", "triton_enable_empty_final_response"}
)

# Typed InferTensorContents field and struct code per datatype (FP16/BF16 exist only raw).
_TYPED: dict[str, tuple[str, str]] = {
    "BOOL": ("bool_contents", "?"), "INT8": ("int_contents", "b"), "INT16": ("int_contents", "h"),
    "INT32": ("int_contents", "i"), "INT64": ("int64_contents", "q"), "UINT8": ("uint_contents", "B"),
    "UINT16": ("uint_contents", "H"), "UINT32": ("uint_contents", "I"), "UINT64": ("uint64_contents", "Q"),
    "FP32": ("fp32_contents", "f"), "FP64": ("fp64_contents", "d"),
}  # fmt: skip


def canonical_contents(tensor: Any) -> bytes:
    """A typed tensor's contents as Triton's raw little-endian bytes would carry them."""
    if tensor.datatype == "BYTES":
        items: Iterable[bytes] = tensor.contents.bytes_contents
        return b"".join(struct.pack("<I", len(item)) + item for item in items)
    field, code = _TYPED[tensor.datatype]
    values = getattr(tensor.contents, field)
    return struct.pack(f"<{len(values)}{code}", *values)


def _parameter(value: Any) -> bytes:
    kind = value.WhichOneof("parameter_choice") or ""
    return f"{kind}={getattr(value, kind) if kind else ''}".encode()


_length = struct.Struct("<Q").pack  # every field is preceded by its length
_NO_PARAMETERS = _length(8) + _length(0)  # an empty parameter map, as `_parameters` would feed it


def _text(value: str) -> bytes:
    data = value.encode()
    return _length(len(data)) + data


def _parameters(parameters: Any, ignored: Collection[str] = ()) -> bytes:
    if not parameters:
        return _NO_PARAMETERS
    kept = sorted(name for name in parameters if name not in ignored)
    parts = [_length(8), _length(len(kept))]
    for name in kept:
        value = _parameter(parameters[name])
        parts += [_text(name), _length(len(value)), value]
    return b"".join(parts)


def cache_key(
    request: Any,
    model: str,
    version: str,
    ignored_parameters: Collection[str] = DEFAULT_IGNORED_PARAMETERS,
    tensors: Sequence[bytes | memoryview] | None = None,
) -> bytes:
    """The key of a validated ModelInferRequest sent to `model` version `version`; `tensors`: its
    raw inputs when they were kept out of the parsed request (read in place, never copied).

    The hash is fed one stream: each field as its 8-byte length, then its bytes. Small fields are
    gathered and fed together (the digest of a stream does not depend on how it is cut); tensor
    contents are fed in place."""
    digest = hashlib.blake2b(digest_size=KEY_BYTES)
    raw = request.raw_input_contents if tensors is None else tensors
    inputs = request.inputs
    order = sorted(range(len(inputs)), key=lambda i: inputs[i].name) if len(inputs) > 1 else range(len(inputs))
    head = [_text(model), _text(version), _length(8), _length(len(inputs))]
    for index in order:
        tensor = inputs[index]
        shape = tensor.shape
        contents = raw[index] if raw else canonical_contents(tensor)
        dimensions = struct.pack(f"<{len(shape)}q", *shape)
        head += [_text(tensor.name), _text(tensor.datatype), _length(len(dimensions)), dimensions,
                 _parameters(tensor.parameters), _length(len(contents))]  # fmt: skip
        digest.update(b"".join(head))
        digest.update(contents)
        head = []
    outputs = sorted(request.outputs, key=lambda output: output.name)
    head += [_length(8), _length(len(outputs))]
    for output in outputs:
        head += [_text(output.name), _parameters(output.parameters)]
    head.append(_parameters(request.parameters, ignored_parameters))
    digest.update(b"".join(head))
    return digest.digest()
