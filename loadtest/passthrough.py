"""The naive proxy: a grpc.aio server forwarding every ModelInfer to one Triton as raw bytes.

One upstream channel, no routing, validation, cache or telemetry, the caller's remaining deadline
passed on: the design the speed issue measured at ~0.43-0.47x of direct Triton. The benchmark runs
it beside the gateway, in the same run, so "how much do the gateway's features cost over the
simplest proxy" is a ratio, not a recollection. Run it as
`python -m loadtest.passthrough --upstream HOST:PORT [--port N]`; it prints
`passthrough serving on 127.0.0.1:N` when ready.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from loadtest.reference_server import serve_model_infer

__all__ = ["serve_passthrough"]


async def serve_passthrough(host: str, port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    forward = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", None, None)  # raw bytes both ways

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        response: bytes = await forward(request, timeout=context.time_remaining())
        return response

    try:
        await serve_model_infer("passthrough", host, port, model_infer)
    finally:
        await channel.close(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True, help="Triton's gRPC HOST:PORT")
    arguments = parser.parse_args()
    asyncio.run(serve_passthrough(arguments.host, arguments.port, arguments.upstream))


if __name__ == "__main__":
    main()
