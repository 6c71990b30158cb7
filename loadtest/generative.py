"""The generative rows of `make bench`: what a stream's request pays for going through the gateway.

- stream overhead: one caller's stream to the `generate` model (4 answers, no delay), one request
  after another: the time from writing a request to its first answer, directly to Triton and
  through a gateway, in interleaved blocks; the gateway's added p50 (target: +0.5 ms at most).
- prefix affinity: three Tritons serving `prefix_cache` (each its own LRU of prompt blocks; the
  first answer costs 1 ms plus 8 ms per block it has not seen), conversations that share a system
  prompt (256 tokens, sent to each Triton once before the run) and grow by one block a turn, 6
  at a time, through a gateway routing with prefix affinity, with P2C and with round robin (each
  on freshly started Tritons): first-answer p50 and p99 and the share of prompt blocks found in
  the chosen replica's cache against an oracle's (every block a conversation had before).
  Targets: affinity's p99 at most 1/3 of round robin's, its hit rate at least 90% of the oracle's.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import yaml
from rich.console import Console
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess, free_port
from gateway.local.triton import DEFAULT_MODEL_REPOSITORY, TritonOptions, TritonProcess

__all__ = ["AFFINITY_ROW", "OVERHEAD_ROW", "first_answer_times", "generative_rows"]

OVERHEAD_ROW = "streams: time to the first answer, one caller's stream, generate (4 answers), sequential"
AFFINITY_ROW = "streams: prefix affinity vs P2C vs round robin, 3 Tritons with prefix caches, 36 conversations"
_BLOCK, _SYSTEM_TOKENS, _CONVERSATIONS, _TURNS, _AT_ONCE = 16, 256, 36, 10, 6
_END = object()


def _request(tokens: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="generate")
    for name, value in (("N", tokens), ("DELAY_MS", 0)):
        request.inputs.add(name=name, datatype="INT32", shape=[1])
        request.raw_input_contents.append(np.array([value], np.int32).tobytes())
    return request


def first_answer_times(address: str, count: int, tokens: int = 4) -> list[float]:
    """Seconds from writing each request to its first answer, on one stream, one after another."""
    requests: queue.Queue[object] = queue.Queue()
    times = []
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers: Iterator[pb.ModelStreamInferResponse] = stub.ModelStreamInfer(iter(requests.get, _END))
        request = _request(tokens)
        for _ in range(count):
            sent = time.perf_counter()
            requests.put(request)
            first = next(answers)
            times.append(time.perf_counter() - sent)
            if first.error_message:
                raise RuntimeError(f"stream answered an error: {first.error_message}")
            for _ in range(tokens - 1):
                next(answers)
        requests.put(_END)
        for _ in answers:  # the stream's end
            pass
    return times


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def _overhead_row(console: Console, triton: str, workdir: Path, rounds: int) -> dict[str, object]:
    console.print(f"[bold]{OVERHEAD_ROW}[/]: {rounds} rounds")
    args = ["--upstream", triton, "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
    sides: dict[str, list[float]] = {"direct": [], "gateway": []}
    with GatewayProcess(args, workdir / "gateway-streams.log").serving() as (address, _pid):
        for where in (triton, address):  # warm both: connections, the model's signature
            first_answer_times(where, 50)
        for _ in range(rounds * 4):
            for side, where in (("direct", triton), ("gateway", address)):
                sides[side] += first_answer_times(where, 150)
    figures: dict[str, object] = {"scenario": OVERHEAD_ROW, "baseline": "direct Triton"}
    for side, times in sides.items():
        figures[f"{side}_first_p50_ms"] = round(_percentile(times, 50), 3)
        figures[f"{side}_first_p99_ms"] = round(_percentile(times, 99), 3)
    added = statistics.median(sides["gateway"]) - statistics.median(sides["direct"])
    figures["added_p50_ms"] = round(added * 1000, 3)
    figures["target"] = "added p50 <= 0.5 ms"
    return figures


def _prompt(prompt: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="prefix_cache")
    request.inputs.add(name="PROMPT", datatype="INT32", shape=[len(prompt)])
    request.raw_input_contents.append(prompt.astype(np.int32).tobytes())
    return request


Turn = tuple[float, int, int, int]  # first answer (s), blocks found, blocks, blocks an oracle finds


def _turn(stub: service_pb2_grpc.GRPCInferenceServiceStub, prompt: np.ndarray, known: int) -> Turn:
    sent = time.perf_counter()
    answers = stub.ModelStreamInfer(iter([_prompt(prompt)]), timeout=30)
    first = next(answers)
    waited = time.perf_counter() - sent
    for _ in answers:
        pass
    if first.error_message:
        raise RuntimeError(f"prefix_cache answered an error: {first.error_message}")
    cached = int(np.frombuffer(first.infer_response.raw_output_contents[1], np.int32)[0])
    return waited, cached, len(prompt) // _BLOCK, known


def _conversations(address: str, system: np.ndarray, seed: int) -> list[Turn]:
    """Conversations of `_TURNS` turns, `_AT_ONCE` at a time, each turn one block longer."""
    rng = np.random.default_rng(seed)
    waiting: queue.Queue[np.ndarray] = queue.Queue()
    for _ in range(_CONVERSATIONS):
        waiting.put(rng.integers(0, 30_000, _TURNS * _BLOCK))
    turns: list[Turn] = []

    def talk() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while True:
                try:
                    words = waiting.get_nowait()
                except queue.Empty:
                    return
                for turn in range(1, _TURNS + 1):  # the oracle knows every block said before
                    prompt = np.concatenate([system, words[: turn * _BLOCK]])
                    turns.append(_turn(stub, prompt, len(prompt) // _BLOCK - 1))

    talkers = [threading.Thread(target=talk) for _ in range(_AT_ONCE)]
    for thread in talkers:
        thread.start()
    for thread in talkers:
        thread.join()
    return turns


@contextlib.contextmanager
def _replicas(workdir: Path, repository: Path, count: int) -> Iterator[list[str]]:
    tritons = [TritonProcess(TritonOptions(grpc_port=free_port(), model_repository=repository)) for _ in range(count)]
    logs = [(workdir / f"triton-prefix-{i}.log").open("wb") for i in range(count)]
    try:
        for triton, log in zip(tritons, logs, strict=True):
            triton.start(log)
        for triton in tritons:
            triton.wait_ready()
        yield [triton.options.grpc_target for triton in tritons]
    finally:
        for triton in tritons:
            triton.stop()
        for log in logs:
            log.close()


def _routed_by(mode: str, replicas: list[str], workdir: Path) -> GatewayProcess:
    pool = {"endpoints": replicas, "lb_policy": "round_robin" if mode == "round robin" else "least_request"}
    route: dict[str, object] = {"variants": [{"name": "1", "pool": "gen", "weight": 100}]}
    if mode == "affinity":
        route["affinity"] = {"input": "PROMPT", "block_size": _BLOCK}
    config = workdir / f"gateway-{mode.replace(' ', '-')}.yaml"
    config.write_text(yaml.safe_dump({"pools": {"gen": pool}, "routes": {"prefix_cache": route}}))
    args = ["--config", str(config), "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"]
    return GatewayProcess(args, workdir / f"gateway-{mode.replace(' ', '-')}.log")


def _affinity_row(console: Console, workdir: Path, rounds: int) -> dict[str, object]:
    console.print(f"[bold]{AFFINITY_ROW}[/]: {rounds} rounds")
    repository = workdir / "models-prefix"
    if not repository.exists():
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / "prefix_cache", repository / "prefix_cache")
    system = np.random.default_rng(0).integers(0, 30_000, _SYSTEM_TOKENS)
    modes = ("affinity", "p2c", "round robin")
    runs: dict[str, list[Turn]] = {mode: [] for mode in modes}
    for round_ in range(rounds):
        for mode in modes:
            with _replicas(workdir, repository, 3) as replicas:
                for replica in replicas:  # the shared system prompt, once on each replica
                    with grpc.insecure_channel(replica) as channel:
                        _turn(service_pb2_grpc.GRPCInferenceServiceStub(channel), system, 0)
                with _routed_by(mode, replicas, workdir).serving() as (address, _pid):
                    runs[mode] += _conversations(address, system, seed=round_)
    figures: dict[str, object] = {"scenario": AFFINITY_ROW, "baseline": "round robin"}
    p99s, hits = {}, {}
    for mode, turns in runs.items():
        key = mode.replace(" ", "_")
        waits = [t[0] for t in turns]
        p99s[mode], hits[mode] = _percentile(waits, 99), sum(t[1] for t in turns) / sum(t[2] for t in turns)
        figures[f"{key}_first_p50_ms"] = round(_percentile(waits, 50), 2)
        figures[f"{key}_first_p99_ms"] = round(p99s[mode], 2)
        figures[f"{key}_hit_rate"] = round(hits[mode], 3)
    oracle = sum(t[3] for t in runs["affinity"]) / sum(t[2] for t in runs["affinity"])
    figures["oracle_hit_rate"] = round(oracle, 3)
    figures["affinity_p99_vs_round_robin"] = round(p99s["affinity"] / p99s["round robin"], 3)
    figures["affinity_hits_vs_oracle"] = round(hits["affinity"] / oracle, 3)
    figures["target"] = "p99 <= 1/3 of round robin's; hits >= 0.9 of the oracle's"
    return figures


def generative_rows(
    console: Console, triton: str, workdir: Path, rounds: int, wanted: Callable[[str], bool]
) -> list[dict[str, object]]:
    rows = []
    if wanted(OVERHEAD_ROW):
        rows.append(_overhead_row(console, triton, workdir, rounds))
    if wanted(AFFINITY_ROW):
        rows.append(_affinity_row(console, workdir, rounds))
    return rows
