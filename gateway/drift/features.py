"""Features of a sampled request, read from its serialized message: each element of a small
input (per row), or the mean and standard deviation of a large one; and the prediction's class
and top probability for the outputs."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import triton_to_np_dtype

__all__ = ["OUTPUT_CLASS", "OUTPUT_TOP", "arrays_features", "observation_features"]

OUTPUT_CLASS, OUTPUT_TOP = "output.class", "output.top"
Features = dict[str, np.ndarray]  # feature -> values (one per row)


def arrays_features(arrays: Mapping[str, np.ndarray], max_elements: int) -> Features:
    """Inputs as arrays whose first axis is the rows."""
    features: Features = {}
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf" or array.ndim == 0:
            continue  # BYTES and the like: nothing numeric to compare
        rows = array.reshape(array.shape[0], -1).astype(np.float64)
        if rows.shape[1] <= max_elements:
            features |= {f"{name}[{j}]": rows[:, j] for j in range(rows.shape[1])}
        else:
            features |= {f"{name}.mean": rows.mean(axis=1), f"{name}.std": rows.std(axis=1)}
    return features


def _inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    arrays = {}
    for index, tensor in enumerate(request.inputs):
        dtype = triton_to_np_dtype(tensor.datatype)
        if index >= len(request.raw_input_contents) or dtype is None or tensor.datatype == "BYTES":
            continue
        shape = list(tensor.shape) or [1]
        values = np.frombuffer(request.raw_input_contents[index], dtype=dtype)
        if values.size == int(np.prod(shape)):
            arrays[tensor.name] = values.reshape(shape if len(shape) > 1 else [1, *shape])
    return arrays


def observation_features(observation: Mapping[str, Any], max_elements: int) -> Features | None:
    """A sampled observation's features, or None when it carries no tensors."""
    encoded = observation.get("request")
    if not encoded:
        return None
    request = pb.ModelInferRequest.FromString(base64.b64decode(encoded))
    features = arrays_features(_inputs(request), max_elements)
    prediction = observation.get("prediction") or {}
    if prediction.get("class") is not None:
        features[OUTPUT_CLASS] = np.array([float(prediction["class"])])
    if prediction.get("top") is not None:
        features[OUTPUT_TOP] = np.array([float(prediction["top"])])
    return features
