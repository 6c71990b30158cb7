"""The benchmark's reference servers (`loadtest.canned`, `loadtest.passthrough`): a grpc.aio
server with one ModelInfer handler, announced as `<name> serving on HOST:PORT`, stopped by
SIGTERM or SIGINT; `running` starts one in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator

import grpc

INFERENCE_SERVICE = "inference.GRPCInferenceService"

__all__ = ["ModelInfer", "running", "serve_model_infer"]

ModelInfer = Callable[[bytes, "grpc.aio.ServicerContext[bytes, bytes]"], Awaitable[bytes]]


async def serve_model_infer(name: str, host: str, port: int, model_infer: ModelInfer) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(INFERENCE_SERVICE, {"ModelInfer": handler})])
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print(f"{name} serving on {host}:{bound}", flush=True)
    await stopping.wait()
    await server.stop(0)


@contextlib.contextmanager
def running(module: str, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m module args` until the block ends (then SIGTERM): its address and process."""
    with subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            if " serving on " not in line:
                raise RuntimeError(f"{module} did not start: {line!r}")
            yield line.split()[-1], process
        finally:
            process.terminate()
            process.wait(10)
