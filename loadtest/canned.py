"""Python's inbound floor: a grpc.aio server answering every ModelInfer with one canned response.

No routing, no upstream: what any grpc.aio front costs per request on this machine. The benchmark
measures it beside the gateway, so "gateway CPU per request" has a yardstick. Run it as
`python -m loadtest.canned --port N`; it prints `canned serving on 127.0.0.1:N` when ready.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from loadtest.reference_server import serve_model_infer

__all__ = ["canned_response", "serve_canned"]


def canned_response(elements: int = 16) -> bytes:
    response = service_pb2.ModelInferResponse(model_name="identity", model_version="1")
    response.outputs.add(name="OUTPUT0", datatype="FP32", shape=[elements])
    response.raw_output_contents.append(np.zeros(elements, np.float32).tobytes())
    encoded: bytes = response.SerializeToString()
    return encoded


async def serve_canned(host: str, port: int) -> None:
    answer = canned_response()

    async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return answer

    await serve_model_infer("canned", host, port, model_infer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args()
    asyncio.run(serve_canned(arguments.host, arguments.port))


if __name__ == "__main__":
    main()
