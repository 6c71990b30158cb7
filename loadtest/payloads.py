"""Pre-serialized request payloads: the generator sends bytes it built before the clock started."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import service_pb2

from loadtest.scenario import RequestMix

__all__ = ["Payloads"]

_NUMPY = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64}


def _tensor(datatype: str, shape: list[int], rng: np.random.Generator) -> bytes:
    if datatype == "BYTES":
        count = int(np.prod(shape))
        return b"".join(
            len(s).to_bytes(4, "little") + s for s in (f"item-{rng.integers(1 << 30)}".encode() for _ in range(count))
        )
    return rng.standard_normal(shape).astype(_NUMPY[datatype]).tobytes()


class Payloads:
    """For each request kind, `keys` distinct serialized requests, drawn Zipf-distributed."""

    def __init__(self, mixes: list[RequestMix], seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self.mixes = mixes
        self._weights = np.array([m.weight for m in mixes]) / sum(m.weight for m in mixes)
        self._bodies: list[list[bytes]] = []
        self._zipf: list[np.ndarray] = []
        for mix in mixes:
            bodies = []
            for _ in range(mix.keys):
                request = service_pb2.ModelInferRequest(model_name=mix.model, model_version=mix.version)
                for key, value in mix.parameters.items():
                    request.parameters[key].int64_param = value
                for name, spec in mix.inputs.items():
                    request.inputs.add(name=name, datatype=spec.datatype, shape=spec.shape)
                    request.raw_input_contents.append(_tensor(spec.datatype, spec.shape, self._rng))
                bodies.append(request.SerializeToString())
            self._bodies.append(bodies)
            ranks = np.arange(1, mix.keys + 1, dtype=np.float64) ** -mix.zipf_s
            self._zipf.append(ranks / ranks.sum())

    def draw(self) -> tuple[int, bytes]:
        kind = int(self._rng.choice(len(self.mixes), p=self._weights))
        key = int(self._rng.choice(len(self._bodies[kind]), p=self._zipf[kind]))
        return kind, self._bodies[kind][key]
