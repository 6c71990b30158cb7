"""A ModelInferRequest re-addressed to a variant's upstream model and version.

On the hot path the caller's bytes are kept: protobuf lets a later occurrence of a singular field
override an earlier one, so appending `model_name` / `model_version` re-addresses the request
without parsing or re-serializing its tensors. Only clearing a version (which appending cannot
do) needs a full copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from tritonclient.grpc import service_pb2

from gateway.wire import Tensor, field_header, tensors_suffix
from router import Variant

__all__ = ["append_string_field", "retarget", "retarget_payload"]

_MODEL_NAME, _MODEL_VERSION = 1, 2  # ModelInferRequest field numbers


def _string_field(number: int, value: str) -> bytes:
    encoded = value.encode()
    return field_header(number, len(encoded)) + encoded


def append_string_field(message: bytes, number: int, value: str) -> bytes:
    """`message` with string field `number` set to `value` (a non-empty value overrides)."""
    return message + _string_field(number, value)


def retarget(request: service_pb2.ModelInferRequest, variant: Variant, tensors: Sequence[Tensor] = ()) -> bytes:
    """Serialized for the variant; the caller's message is left as it was (shadows reuse it).
    `tensors`: the raw inputs, when they were kept out of `request` (gateway.wire)."""
    copy = service_pb2.ModelInferRequest()
    copy.CopyFrom(request)
    copy.model_name, copy.model_version = variant.model, variant.version
    if request.raw_input_contents or not tensors:
        return copy.SerializeToString()
    return b"".join([copy.SerializeToString(), *tensors_suffix(tensors)])


def retarget_payload(
    payload: bytes, request: service_pb2.ModelInferRequest, variant: Variant, tensors: Sequence[Tensor] = ()
) -> bytes:
    """The caller's serialized request, re-addressed to the variant (one copy at most)."""
    if variant.version == "" and request.model_version:
        return retarget(request, variant, tensors)
    suffix = b""
    if variant.model != request.model_name:
        suffix += _string_field(_MODEL_NAME, variant.model)
    if variant.version != request.model_version:
        suffix += _string_field(_MODEL_VERSION, variant.version)
    return payload + suffix if suffix else payload
