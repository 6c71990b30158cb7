"""The best-configured direct Triton a user would compare the gateway with: the same models, each
batching model with Triton's dynamic batcher and every model with Triton's own response cache on,
Triton started with a local cache (`--cache-config local,size=...`). Made in a folder of its own
from `deploy/models`, so the plain repository (and every test that uses it) stays as it is."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from gateway.local.processes import free_port
from gateway.local.triton import DEFAULT_MODEL_REPOSITORY, TritonOptions, TritonProcess

__all__ = ["CACHE_BYTES", "running_triton", "running_tuned_triton", "tuned_repository"]

CACHE_BYTES = 256 << 20
# Models whose answers may be cached: deterministic ones (not `counter`, `flaky`, `slow`, ...).
CACHED = ("identity", "identity_batched", "heavy", "image", "classifier")


def tuned_repository(folder: Path, source: Path = DEFAULT_MODEL_REPOSITORY, cache: bool = True) -> Path:
    """A copy of `source` with `response_cache { enable: true }` on the cached models (unless not
    `cache`) and the dynamic batcher on every model that batches (max_batch_size > 0)."""
    repository = folder / ("models" if cache else "models-batched")
    for model in CACHED:
        shutil.copytree(source / model, repository / model)
        config = repository / model / "config.pbtxt"
        text = config.read_text()
        batches = int(re.search(r"max_batch_size:\s*(\d+)", text).group(1)) > 0  # type: ignore[union-attr]
        if batches and "dynamic_batching" not in text:
            text += "\ndynamic_batching { }\n"
        config.write_text(text + ("\nresponse_cache { enable: true }\n" if cache else ""))
    return repository


@contextlib.contextmanager
def running_triton(folder: Path, repository: Path, name: str, *extra_args: str) -> Iterator[TritonProcess]:
    """A Triton of its own on `repository`, logging to `folder/name.log`, ready when yielded."""
    triton = TritonProcess(TritonOptions(grpc_port=free_port(), model_repository=repository, extra_args=extra_args))
    with (folder / f"{name}.log").open("wb") as log:
        triton.start(log)
    try:
        triton.wait_ready()
        yield triton
    finally:
        triton.stop()


@contextlib.contextmanager
def running_tuned_triton(folder: Path) -> Iterator[TritonProcess]:
    with running_triton(
        folder, tuned_repository(folder), "tuned-triton", f"--cache-config=local,size={CACHE_BYTES}"
    ) as triton:
        yield triton
