"""Session-wide real Triton and a gateway in front of it (ephemeral ports on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.localrun import GatewayProcess
from tests.procs import TritonCli, running_gateway, running_triton


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonCli]:
    with running_triton(tmp_path_factory.mktemp("triton") / "triton.log") as server:
        yield server


@pytest.fixture(scope="session")
def gateway(triton: TritonCli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with running_gateway(["--upstream", triton.address], log) as server:
        yield server
