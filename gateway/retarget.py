"""A ModelInferRequest re-addressed to a variant's upstream model and version.

On the hot path the caller's bytes are kept: protobuf lets a later occurrence of a singular field
override an earlier one, so appending `model_name` / `model_version` re-addresses the request
without parsing or re-serializing its tensors. Only clearing a version (which appending cannot
do) needs a full copy.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from router import Variant

__all__ = ["append_string_field", "retarget", "retarget_payload"]

_MODEL_NAME, _MODEL_VERSION = 1, 2  # ModelInferRequest field numbers


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def append_string_field(message: bytes, number: int, value: str) -> bytes:
    """`message` with string field `number` set to `value` (a non-empty value overrides)."""
    encoded = value.encode()
    return message + _varint(number << 3 | 2) + _varint(len(encoded)) + encoded


def retarget(request: service_pb2.ModelInferRequest, variant: Variant) -> bytes:
    """Serialized for the variant; the caller's message is left as it was (shadows reuse it)."""
    copy = service_pb2.ModelInferRequest()
    copy.CopyFrom(request)
    copy.model_name, copy.model_version = variant.model, variant.version
    return copy.SerializeToString()


def retarget_payload(payload: bytes, request: service_pb2.ModelInferRequest, variant: Variant) -> bytes:
    """The caller's serialized request, re-addressed to the variant."""
    if variant.version == "" and request.model_version:
        return retarget(request, variant)
    if variant.model != request.model_name:
        payload = append_string_field(payload, _MODEL_NAME, variant.model)
    if variant.version != request.model_version:
        payload = append_string_field(payload, _MODEL_VERSION, variant.version)
    return payload
