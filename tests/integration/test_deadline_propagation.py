"""The caller's remaining deadline travels upstream as the upstream call's own deadline.

Triton exposes no API that reports the deadline a request arrived with, so this one test puts a
recording stand-in of the Triton service behind the gateway (a real gRPC server on 127.0.0.1)
that notes `time_remaining()` for each ModelInfer it receives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from gateway.local.samples import infer_inputs
from tests.procs import running_gateway
from tests.recording import RecordingTriton


def test_remaining_deadline_reaches_upstream(recorder: tuple[RecordingTriton, str], tmp_path: Path) -> None:
    servicer, address = recorder
    inputs = infer_inputs({"INPUT0": np.zeros(2, np.float32)})
    with (
        running_gateway(["--upstream", address], tmp_path / "gateway.log") as gateway,
        grpcclient.InferenceServerClient(gateway.address) as client,
    ):
        client.infer("m", inputs, client_timeout=7.0)
        client.infer("m", inputs)
    with_deadline, without_deadline = servicer.remaining
    assert with_deadline is not None and 5.0 < with_deadline <= 7.5  # grpc-timeout is coarse-grained
    assert without_deadline is None or without_deadline > 3600
