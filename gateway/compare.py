"""Compare a shadow's outputs with the primary's, tensor by tensor (off the hot path: numpy is fine).

Per output: exact byte equality, max absolute and relative error, and for class scores (a float
tensor whose last dimension is > 1) the share of rows whose argmax agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import triton_to_np_dtype

__all__ = ["Comparison", "TensorComparison", "compare_responses"]


@dataclass(frozen=True, slots=True)
class TensorComparison:
    name: str
    exact: bool
    max_abs_error: float
    max_rel_error: float
    argmax_agreement: float | None  # share of rows, for class scores only
    note: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    tensors: tuple[TensorComparison, ...]

    @property
    def exact(self) -> bool:
        return all(t.exact for t in self.tensors)

    @property
    def has_class_scores(self) -> bool:
        return any(t.argmax_agreement is not None for t in self.tensors)

    @property
    def argmax_disagrees(self) -> bool:
        return any(t.argmax_agreement is not None and t.argmax_agreement < 1.0 for t in self.tensors)

    @property
    def max_abs_error(self) -> float:
        return max((t.max_abs_error for t in self.tensors), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((t.max_rel_error for t in self.tensors), default=0.0)


def _outputs(response: service_pb2.ModelInferResponse) -> dict[str, tuple[str, list[int], bytes]]:
    return {
        tensor.name: (tensor.datatype, list(tensor.shape), raw)
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False)
    }


def _compare_tensor(
    name: str, primary: tuple[str, list[int], bytes], shadow: tuple[str, list[int], bytes]
) -> TensorComparison:
    (p_type, p_shape, p_raw), (s_type, s_shape, s_raw) = primary, shadow
    if (p_type, p_shape) != (s_type, s_shape):
        note = f"{p_type}{p_shape} vs {s_type}{s_shape}"
        return TensorComparison(name, False, float("inf"), float("inf"), None, note)
    if p_type == "BYTES":
        return TensorComparison(name, p_raw == s_raw, 0.0 if p_raw == s_raw else float("inf"), 0.0, None)
    dtype = triton_to_np_dtype(p_type)
    a = np.frombuffer(p_raw, dtype=dtype).reshape(p_shape).astype(np.float64)
    b = np.frombuffer(s_raw, dtype=dtype).reshape(s_shape).astype(np.float64)
    difference = np.abs(a - b)
    max_abs = float(difference.max()) if difference.size else 0.0
    scale = np.maximum(np.abs(a), np.finfo(np.float64).tiny)
    max_rel = float((difference / scale).max()) if difference.size else 0.0
    agreement = None
    if p_type in ("FP16", "BF16", "FP32", "FP64") and len(p_shape) >= 1 and p_shape[-1] > 1 and a.size:
        agreement = float(np.mean(a.argmax(axis=-1) == b.argmax(axis=-1)))
    return TensorComparison(name, p_raw == s_raw, max_abs, max_rel, agreement)


def compare_responses(primary: bytes, shadow: bytes) -> Comparison:
    primary_outputs = _outputs(service_pb2.ModelInferResponse.FromString(primary))
    shadow_outputs = _outputs(service_pb2.ModelInferResponse.FromString(shadow))
    tensors = []
    for name, tensor in primary_outputs.items():
        other = shadow_outputs.get(name)
        if other is None:
            tensors.append(TensorComparison(name, False, float("inf"), float("inf"), None, "missing in shadow"))
        else:
            tensors.append(_compare_tensor(name, tensor, other))
    return Comparison(tuple(tensors))
