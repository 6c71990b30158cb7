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


class _Hasher:
    def __init__(self) -> None:
        self._digest = hashlib.blake2b(digest_size=KEY_BYTES)

    def field(self, data: bytes | memoryview) -> None:
        self._digest.update(struct.pack("<Q", len(data)))
        self._digest.update(data)

    def text(self, value: str) -> None:
        self.field(value.encode())

    def parameters(self, parameters: Any, ignored: Collection[str] = ()) -> None:
        kept = sorted(name for name in parameters if name not in ignored)
        self.field(struct.pack("<Q", len(kept)))
        for name in kept:
            self.text(name)
            self.field(_parameter(parameters[name]))

    def digest(self) -> bytes:
        return self._digest.digest()


def cache_key(
    request: Any,
    model: str,
    version: str,
    ignored_parameters: Collection[str] = DEFAULT_IGNORED_PARAMETERS,
    tensors: Sequence[bytes | memoryview] | None = None,
) -> bytes:
    """The key of a validated ModelInferRequest sent to `model` version `version`; `tensors`: its
    raw inputs when they were kept out of the parsed request (read in place, never copied)."""
    hasher = _Hasher()
    hasher.text(model)
    hasher.text(version)
    raw = request.raw_input_contents if tensors is None else tensors
    inputs = sorted(range(len(request.inputs)), key=lambda i: request.inputs[i].name)
    hasher.field(struct.pack("<Q", len(inputs)))
    for index in inputs:
        tensor = request.inputs[index]
        hasher.text(tensor.name)
        hasher.text(tensor.datatype)
        hasher.field(struct.pack(f"<{len(tensor.shape)}q", *tensor.shape))
        hasher.parameters(tensor.parameters)
        hasher.field(raw[index] if raw else canonical_contents(tensor))
    outputs = sorted(request.outputs, key=lambda output: output.name)
    hasher.field(struct.pack("<Q", len(outputs)))
    for output in outputs:
        hasher.text(output.name)
        hasher.parameters(output.parameters)
    hasher.parameters(request.parameters, ignored_parameters)
    return hasher.digest()
