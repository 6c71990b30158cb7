"""Several records in one request: their tensors concatenated along the batch dimension, the
answer's outputs cut back into one piece per record. Pure: requests and responses in and out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tritonclient.grpc import InferResult
from tritonclient.grpc import service_pb2 as pb

__all__ = ["merge", "merge_key", "split"]

MergeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def merge_key(request: pb.ModelInferRequest) -> MergeKey | None:
    """What requests must share to go as one (input names, datatypes, shapes past the batch
    dimension); None when this one cannot (an input whose batch dimension is not 1)."""
    if any(not tensor.shape or tensor.shape[0] != 1 for tensor in request.inputs):
        return None
    return tuple(sorted((t.name, t.datatype, tuple(t.shape[1:])) for t in request.inputs))


def merge(requests: Sequence[pb.ModelInferRequest]) -> pb.ModelInferRequest:
    """One request holding every row of `requests` (all of one merge key), in their order."""
    first = requests[0]
    merged = pb.ModelInferRequest(model_name=first.model_name, model_version=first.model_version)
    for tensor in first.inputs:
        merged.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=[len(requests), *tensor.shape[1:]])
        merged.raw_input_contents.append(b"".join(_raw(request, tensor.name) for request in requests))
    return merged


def _raw(request: pb.ModelInferRequest, name: str) -> bytes:
    position = next(i for i, tensor in enumerate(request.inputs) if tensor.name == name)
    return request.raw_input_contents[position]


def split(response: pb.ModelInferResponse, rows: int) -> list[dict[str, np.ndarray]] | None:
    """Each row's outputs (its batch dimension of 1 kept), in order; None when some output does
    not have one row per record (then the records go one by one)."""
    result = InferResult(response)
    arrays = {output.name: result.as_numpy(output.name) for output in response.outputs}
    if any(array is None or array.ndim == 0 or array.shape[0] != rows for array in arrays.values()):
        return None
    return [{name: array[row : row + 1] for name, array in arrays.items()} for row in range(rows)]
