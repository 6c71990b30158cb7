"""Helpers for routing tests: raw ModelInfer calls that expose the variant that answered."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

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


def identity_request(values: np.ndarray | None = None) -> pb.ModelInferRequest:
    """A ModelInfer for Triton's `identity` model (FP32 [-1])."""
    values = np.ones(4, np.float32) if values is None else values.astype(np.float32)
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[len(values)])
    request.raw_input_contents.append(values.tobytes())
    return request


def identity_served(address: str) -> int:
    """Successful `identity` executions a Triton has counted itself (its ModelStatistics)."""
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="identity"), timeout=5)
    return sum(s.inference_stats.success.count for s in stats.model_stats)


def until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until `condition` held (inf if it did not within `seconds`; an RPC error is a no)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            if condition():
                return time.monotonic() - started
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    return float("inf")


class ClosedLoad:
    """Client threads calling `identity` at `target` (a gRPC target: one address or several) without
    pause, each on a channel of its own; how many were sent, and every failure with its status."""

    def __init__(self, target: str, threads: int = 4, options: list[tuple[str, Any]] | None = None) -> None:
        self.sent, self.threads = 0, threads
        self.failed: list[str] = []
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(target, options or []), daemon=True)
                         for _ in range(threads)]  # fmt: skip

    def _send(self, target: str, options: list[tuple[str, Any]]) -> None:
        with grpc.insecure_channel(target, options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not self._stop.is_set():
                try:
                    stub.ModelInfer(identity_request(), timeout=15)
                    failure = None
                except grpc.RpcError as exc:
                    failure = f"{exc.code().name}: {exc.details()}"
                with self._lock:
                    self.sent += 1
                    if failure:
                        self.failed.append(failure)

    def __enter__(self) -> ClosedLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
