"""Load scenarios: one YAML file each, validated like the gateway's own configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RequestMix", "Scenario", "TensorSpec", "load_scenario"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    datatype: Literal["FP32", "INT32", "INT64", "BYTES"] = "FP32"
    shape: list[int] = Field(min_length=1)


class RequestMix(_Frozen):
    """One kind of request: a model, its input tensors, its share of the load, its metadata."""

    model: str
    version: str = ""
    inputs: dict[str, TensorSpec]
    weight: float = Field(default=1.0, gt=0)
    metadata: dict[str, str] = Field(default_factory=dict)
    # Request parameters (int64), as Triton reads them: `priority`, `timeout` (µs).
    parameters: dict[str, int] = Field(default_factory=dict)
    # Distinct inputs drawn Zipf-distributed (exponent `zipf_s`): repeats exercise cache and coalescing.
    keys: int = Field(default=1, ge=1)
    zipf_s: float = Field(default=1.1, gt=1.0)


class Scenario(_Frozen):
    name: str
    target: str = "127.0.0.1:8001"
    mode: Literal["open", "closed"] = "closed"
    concurrency: int = Field(default=16, ge=1)  # closed loop: requests in flight
    rate: float = Field(default=100.0, gt=0)  # open loop: requests per second
    arrivals: Literal["constant", "poisson"] = "constant"
    duration_s: float = Field(default=10.0, gt=0)
    warmup_s: float = Field(default=1.0, ge=0)
    connections: int = Field(default=1, ge=1)  # per process
    # Load-generator processes (each with its own event loop and connections); the concurrency or
    # the rate is shared among them. More than one when one Python process cannot saturate the target.
    processes: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    requests: list[RequestMix] = Field(min_length=1)


def load_scenario(path: Path) -> Scenario:
    return Scenario.model_validate(yaml.safe_load(path.read_text()))
