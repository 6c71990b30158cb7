"""Example inputs for every model of the local repository (deploy/models), for the demo and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from gateway.local.triton import REPO_ROOT

__all__ = ["Sample", "digits", "infer_inputs", "samples"]


@dataclass(frozen=True)
class Sample:
    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    version: str = ""
    deterministic: bool = True
    note: str = field(default="", compare=False)


def infer_inputs(inputs: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    prepared = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        prepared.append(tensor)
    return prepared


@cache
def digits() -> dict[str, np.ndarray]:
    """Held-out 8x8 digits with labels and each classifier version's prediction."""
    with np.load(REPO_ROOT / "deploy" / "digits_sample.npz") as data:
        return {key: data[key] for key in data.files}


def samples() -> list[Sample]:
    rng = np.random.default_rng(7)
    vector = rng.standard_normal(16).astype(np.float32)
    ints = (rng.integers(-100, 100, 16).astype(np.int32), rng.integers(-100, 100, 16).astype(np.int32))
    pixels = digits()["pixels"][:4].astype(np.float32)
    return [
        Sample("identity", {"INPUT0": vector}, ("OUTPUT0",)),
        Sample("identity_batched", {"INPUT0": vector.reshape(1, 16)}, ("OUTPUT0",)),
        Sample("image", {"INPUT0": rng.random((1, 3, 224, 224), dtype=np.float32)}, ("OUTPUT0",), note="602 KB"),
        Sample("add_sub", {"INPUT0": ints[0], "INPUT1": ints[1]}, ("OUTPUT0", "OUTPUT1")),
        Sample(
            "add_sub_fp32",
            {"INPUT0": ints[0].astype(np.float32), "INPUT1": ints[1].astype(np.float32)},
            ("OUTPUT0", "OUTPUT1"),
        ),
        Sample(
            "text",
            {"INPUT0": np.array([b"hello", b"triton", "gr\u00fc\u00df".encode()], dtype=np.object_)},
            ("OUTPUT0",),
        ),
        Sample("classifier", {"INPUT0": pixels}, ("LOGITS", "CLASS"), version="1"),
        Sample("classifier", {"INPUT0": pixels}, ("LOGITS", "CLASS"), version="2"),
        Sample("classifier_broken", {"INPUT0": pixels}, ("CLASS",), version="2", note="100 ms late"),
        Sample("slow", {"DELAY_MS": np.array([[20.0]], dtype=np.float32)}, ("OUTPUT0",), note="20 ms"),
        Sample("flaky", {"INPUT0": vector, "FAIL": np.array([False])}, ("OUTPUT0",)),
        Sample("counter", {"INPUT0": vector}, ("OUTPUT0", "COUNT"), deterministic=False),
        Sample("heavy", {"INPUT0": vector.reshape(1, 16)}, ("OUTPUT0",), note="5 ms"),
        Sample(
            "batch_echo",
            {
                "IN_FP32": vector.reshape(1, 16),
                "IN_INT32": ints[0][:2].reshape(1, 2),
                "IN_BYTES": np.array([[b"a", b"bc"]], dtype=np.object_),
                "IN_BOOL": np.array([[True]]),
                "IN_FP16": vector[:2].astype(np.float16).reshape(1, 2),
                "IN_UINT64": np.array([[2**40]], dtype=np.uint64),
                "IN_INT8": np.array([[-1, 0, 1]], dtype=np.int8),
            },
            ("OUT_FP32", "OUT_BYTES", "BATCH_SIZE"),
        ),
    ]
