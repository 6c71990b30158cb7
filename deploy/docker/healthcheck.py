"""The gateway container's health check, over gRPC; exit 0 when healthy, 1 otherwise.

Default (Docker HEALTHCHECK): `grpc.health.v1.Health/Check` with the empty service name is
SERVING, i.e. an upstream Triton is ready and the gateway is not draining.
`--live` (Kubernetes liveness): the inference service's `ServerLive` answers `live: true`, i.e.
the process serves, whatever the state of Triton.

Only grpcio, grpcio-health-checking and protobuf are imported, so a check costs little.
Usage: python healthcheck.py [--live] [--address HOST:PORT] [--timeout S]
(address default: env GATEWAY_HEALTH_ADDRESS, else 127.0.0.1:8001).
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVER_LIVE = "/inference.GRPCInferenceService/ServerLive"


def serving(channel: grpc.Channel, timeout: float) -> bool:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def live(channel: grpc.Channel, timeout: float) -> bool:
    # ServerLiveResponse is `bool live = 1`: the same wire format as google.protobuf.BoolValue.
    call = channel.unary_unary(SERVER_LIVE, request_serializer=None, response_deserializer=None)
    answer: bytes = call(b"", timeout=timeout)
    return wrappers_pb2.BoolValue.FromString(answer).value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC health check of the gateway")
    parser.add_argument("--live", action="store_true", help="check ServerLive instead of the health service")
    parser.add_argument("--address", default=os.environ.get("GATEWAY_HEALTH_ADDRESS", "127.0.0.1:8001"))
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    check = live if args.live else serving
    try:
        with grpc.insecure_channel(args.address) as channel:
            healthy = check(channel, args.timeout)
    except grpc.RpcError as exc:
        print(f"{args.address}: {exc.code().name}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"{args.address}: {'not live' if args.live else 'NOT_SERVING'}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
