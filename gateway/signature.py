"""What a model accepts, distilled from Triton's ModelMetadata and ModelConfig answers."""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2, service_pb2


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 is a wildcard dimension
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ModelSignature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: frozenset[str]
    max_batch_size: int
    decoupled: bool

    @classmethod
    def from_triton(
        cls, metadata: service_pb2.ModelMetadataResponse, config: model_config_pb2.ModelConfig
    ) -> ModelSignature:
        optional = {spec.name for spec in config.input if spec.optional}
        inputs = {
            spec.name: TensorSpec(spec.name, spec.datatype, tuple(spec.shape), spec.name in optional)
            for spec in metadata.inputs
        }
        return cls(
            name=metadata.name,
            inputs=inputs,
            outputs=frozenset(spec.name for spec in metadata.outputs),
            max_batch_size=config.max_batch_size,
            decoupled=config.model_transaction_policy.decoupled,
        )
