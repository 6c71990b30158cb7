"""Helpers for routing tests: raw ModelInfer calls that expose the variant that answered."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway_admin import admin_pb2 as apb
from gateway_admin import admin_pb2_grpc

TOKEN = "test-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def digit_request(pixels: np.ndarray, model: str = "classifier") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(pixels.astype(np.float32).reshape(1, 64).tobytes())
    return request


class Client:
    """One channel to the gateway, kept open across calls (like a long-lived client stub)."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def call(self, request: pb.ModelInferRequest, **metadata: str) -> tuple[pb.ModelInferResponse, dict[str, str]]:
        """The response and the trailing metadata (metadata keys given with _ for -)."""
        sent = tuple((key.replace("_", "-"), value) for key, value in metadata.items())
        response, call = self.stub.ModelInfer.with_call(request, metadata=sent, timeout=10)
        return response, dict(call.trailing_metadata())

    def infer(self, request: pb.ModelInferRequest, **metadata: str) -> tuple[pb.ModelInferResponse, str]:
        """The response and the variant named in the trailing metadata."""
        response, trailing = self.call(request, **metadata)
        return response, trailing["x-gateway-variant"]

    def close(self) -> None:
        self.channel.close()


class Admin:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = admin_pb2_grpc.GatewayAdminStub(self.channel)

    def set_route(self, route: apb.Route) -> apb.RouteResponse:
        return self.stub.SetRoute(apb.SetRouteRequest(route=route), metadata=AUTH, timeout=10)

    def routes(self, model: str) -> apb.GetRoutesResponse:
        return self.stub.GetRoutes(apb.GetRoutesRequest(model=model), metadata=AUTH, timeout=10)

    def set_weights(self, model: str, **weights: int) -> apb.RouteResponse:
        return self.stub.SetWeights(apb.SetWeightsRequest(model=model, weights=weights), metadata=AUTH, timeout=10)

    def shadow_stats(self, model: str) -> list[apb.ShadowStats]:
        request = apb.GetShadowStatsRequest(model=model)
        return list(self.stub.GetShadowStats(request, metadata=AUTH, timeout=10).stats)

    def close(self) -> None:
        self.channel.close()


def versions_route(model: str, weights: dict[str, int], **extra: object) -> apb.Route:
    """A route whose variants are the model's versions, named by number, on the default pool."""
    variants = [apb.Variant(name=v, pool="default", model=model, version=v, weight=w) for v, w in weights.items()]
    return apb.Route(model=model, variants=variants, **extra)  # type: ignore[arg-type]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def sample_value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent (then what the series has instead is printed, for
    whoever reads a failure)."""
    found = samples.get((name, frozenset(labels.items())), 0.0)
    if found == 0.0:
        similar = {tuple(sorted(key[1])): v for key, v in samples.items() if key[0] == name}
        print(f"{name}{labels}: no such series; {name} has {similar}")
    return found


def scrape_metrics(address: str) -> Samples:
    """Every sample of a /metrics page, by name and labels."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
