"""The benchmark's reference servers (`loadtest.canned`, `loadtest.passthrough`): a grpc.aio
server with one ModelInfer handler, announced as `<name> serving on HOST:PORT`, stopped by
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

import grpc

__all__ = ["ModelInfer", "serve_model_infer"]

_SERVICE = "inference.GRPCInferenceService"

ModelInfer = Callable[[bytes, "grpc.aio.ServicerContext[bytes, bytes]"], Awaitable[bytes]]


async def serve_model_infer(name: str, host: str, port: int, model_infer: ModelInfer) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_SERVICE, {"ModelInfer": handler})])
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print(f"{name} serving on {host}:{bound}", flush=True)
    await stopping.wait()
    await server.stop(0)
