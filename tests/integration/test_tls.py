"""TLS: a listener that requires client certificates, and TLS towards a Triton that requires it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import TritonOptions, TritonProcess
from tests.certs import CertificateAuthority
from tests.procs import running_gateway


def _identity() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    return request


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, CertificateAuthority]]:
    workdir = tmp_path_factory.mktemp("tls")
    authority = CertificateAuthority(workdir)
    triton_cert, gateway_cert = authority.issue("triton", server=True), authority.issue("gateway", server=True)
    ssl = (
        "--grpc-use-ssl=true", f"--grpc-server-cert={triton_cert.cert}", f"--grpc-server-key={triton_cert.key}",
        f"--grpc-root-cert={authority.ca}",
    )  # fmt: skip
    triton = TritonProcess(TritonOptions(grpc_port=free_port(), extra_args=ssl))
    with (workdir / "triton.log").open("wb") as log:
        triton.start(log)
    try:
        wait_ready_over_tls(triton, authority.ca)
        config = {
            "listen": "127.0.0.1:0",
            "tls": {"cert": str(gateway_cert.cert), "key": str(gateway_cert.key), "client_ca": str(authority.ca)},
            "pools": {"secure": {"endpoints": [triton.options.grpc_target], "tls": {"ca": str(authority.ca)}}},
            "default_pool": "secure",
        }
        path = workdir / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        with running_gateway(["--config", str(path)], workdir / "gateway.log") as gateway:
            yield gateway, authority
    finally:
        triton.stop()


def wait_ready_over_tls(triton: TritonProcess, ca: Path) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    deadline = time.monotonic() + 120
    with grpc.secure_channel(triton.options.grpc_target, credentials) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise AssertionError("Triton with TLS did not become ready")


def _call(address: str, credentials: grpc.ChannelCredentials | None) -> pb.ModelInferResponse:
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_identity(), timeout=10)


def test_a_client_with_a_certificate_gets_through_to_a_tls_triton(
    tls_setup: tuple[GatewayProcess, CertificateAuthority],
) -> None:
    gateway, authority = tls_setup
    client = authority.issue("client", server=False)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=authority.ca.read_bytes(), private_key=client.key.read_bytes(),
        certificate_chain=client.cert.read_bytes(),
    )  # fmt: skip
    response = _call(gateway.address, credentials)
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("kind", ["no client certificate", "plaintext"])
def test_clients_without_a_certificate_are_refused(
    kind: str, tls_setup: tuple[GatewayProcess, CertificateAuthority]
) -> None:
    gateway, authority = tls_setup
    credentials = (
        grpc.ssl_channel_credentials(root_certificates=authority.ca.read_bytes()) if kind != "plaintext" else None
    )
    with pytest.raises(grpc.RpcError) as caught:
        _call(gateway.address, credentials)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
