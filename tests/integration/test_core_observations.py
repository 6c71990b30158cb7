"""The core's observation stream, pulled as the control plane pulls it: a record per ended RPC,
in batches, bounded (the overflow dropped and counted, never waited for). The core runs in this
process here, in front of the session's real Triton."""

from __future__ import annotations

import base64
import json

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb

from gateway._core import Core
from gateway.config.boundary import core_config, reflection_descriptors
from gateway.config.schema import parse_config
from tests.procs import TritonCli


def test_observations_come_in_batches_and_the_overflow_is_counted(triton: TritonCli) -> None:
    config = parse_config(
        {"listen": "127.0.0.1:0", "pools": {"p": {"endpoints": [triton.address]}}, "default_pool": "p"}
    )
    core = Core(json.dumps(core_config(config, observations=5, observation_tensors=1.0)), *reflection_descriptors())
    port = core.start()
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
        tensor.set_data_from_numpy(np.ones(4, dtype=np.float32))
        for index in range(8):
            client.infer("identity", [tensor], headers={"x-request-id": f"obs-{index}"})
        client.close()
        records = [json.loads(text) for text in core.next_observations(100, 2.0)]
        assert [r["request_id"] for r in records] == [f"obs-{i}" for i in range(5)]
        first = records[0]
        assert (first["method"], first["model"], first["variant"], first["version"]) == (
            "ModelInfer",
            "identity",
            "1",
            "1",
        )
        assert first["code"] == "OK" and first["latency_ms"] > 0
        request = pb.ModelInferRequest.FromString(base64.b64decode(first["request"]))
        response = pb.ModelInferResponse.FromString(base64.b64decode(first["response"]))
        assert request.model_name == "identity" and request.raw_input_contents[0] == np.ones(4, np.float32).tobytes()
        assert response.raw_output_contents[0] == np.ones(4, np.float32).tobytes()
        assert core.next_observations(100, 0.05) == []
        assert json.loads(core.stats())["observations_dropped"] == 3
    finally:
        core.stop(1.0)


def test_without_a_reader_the_stream_is_off() -> None:
    config = parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}}})
    core = Core(json.dumps(core_config(config)), *reflection_descriptors())
    assert core.next_observations(10, 0.0) == []  # nothing was asked for: no records are made
    assert json.loads(core.stats())["observations_dropped"] == 0
