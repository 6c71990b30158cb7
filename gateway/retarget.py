"""A ModelInferRequest re-addressed to a variant's upstream model and version."""

from __future__ import annotations

from tritonclient.grpc import service_pb2

from router import Variant

__all__ = ["retarget"]


def retarget(request: service_pb2.ModelInferRequest, variant: Variant) -> bytes:
    """Serialized for the variant; the caller's message is left as it was (shadows reuse it)."""
    copy = service_pb2.ModelInferRequest()
    copy.CopyFrom(request)
    copy.model_name, copy.model_version = variant.model, variant.version
    return copy.SerializeToString()
