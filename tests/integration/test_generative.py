"""Generative (decoupled) models through a real gateway and Triton: cancellation reaches the model,
streamed requests are admitted like unary ones and hold their slot until their last answer."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from gateway_admin import admin_pb2 as apb
from gateway_admin import admin_pb2_grpc
from tests.procs import TritonCli, running_gateway, running_triton
from tests.traffic import AUTH, TOKEN, Admin

_END = object()


def generate(tokens: int, delay_ms: int, request_id: str = "", log: Path | None = None,
             empty_final: bool = False) -> pb.ModelInferRequest:  # fmt: skip
    """A request of the `generate` model: `tokens` answers `delay_ms` apart."""
    request = pb.ModelInferRequest(model_name="generate", id=request_id)
    for name, value in (("N", tokens), ("DELAY_MS", delay_ms)):
        request.inputs.add(name=name, datatype="INT32", shape=[1])
        request.raw_input_contents.append(np.array([value], np.int32).tobytes())
    if log is not None:
        request.parameters["log"].string_param = str(log)
    if empty_final:
        request.parameters["triton_enable_empty_final_response"].bool_param = True
    return request


class Stream:
    """One ModelStreamInfer call: requests written when asked, answers gathered with their time."""

    def __init__(self, address: str, timeout: float | None = None) -> None:
        self._channel = grpc.insecure_channel(address)
        self._requests: queue.Queue[object] = queue.Queue()
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self.call = stub.ModelStreamInfer(iter(self._requests.get, _END), timeout=timeout)
        self.answers: queue.Queue[tuple[float, pb.ModelStreamInferResponse]] = queue.Queue()
        self.status: grpc.StatusCode | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for answer in self.call:
                self.answers.put((time.time(), answer))
            self.status = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self.status = exc.code()

    def send(self, request: pb.ModelInferRequest) -> None:
        self._requests.put(request)

    def take(self, count: int, timeout: float = 10.0) -> list[tuple[float, pb.ModelStreamInferResponse]]:
        return [self.answers.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        """Done writing; waits for the answers to end."""
        self._requests.put(_END)
        self._reader.join(30)
        self._channel.close()

    def cancel(self) -> float:
        cancelled = time.time()
        self.call.cancel()
        self._reader.join(10)
        self._channel.close()
        return cancelled


def _log(path: Path) -> list[tuple[str, float]]:
    """The model's log: (event, time) per line ("token 3", "cancelled 6", "done")."""
    lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines()] if path.exists() else []
    return [(event, float(at)) for event, at in lines]


def _until_cancelled(path: Path, timeout_s: float = 5.0) -> list[tuple[str, float]]:
    deadline = time.monotonic() + timeout_s
    while not any(e.startswith("cancelled") for e, _ in _log(path)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _log(path)


def _tokens(answers: list[tuple[float, pb.ModelStreamInferResponse]]) -> list[int]:
    return [int(np.frombuffer(a.infer_response.raw_output_contents[0], np.int32)[0]) for _, a in answers]


def test_a_caller_that_cancels_stops_its_generation_within_100_ms_and_no_one_elses(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    cancelled_log, other_log = tmp_path / "cancelled.log", tmp_path / "other.log"
    leaving, staying = Stream(gateway.address), Stream(gateway.address)
    leaving.send(generate(500, 20, "a", cancelled_log))
    staying.send(generate(40, 20, "b", other_log))
    assert _tokens(leaving.take(5)) == [0, 1, 2, 3, 4]
    cancelled_at = leaving.cancel()
    events = _until_cancelled(cancelled_log)
    stopped = [at for event, at in events if event.startswith("cancelled")]
    assert stopped and stopped[0] - cancelled_at < 0.1, events[-3:]
    assert all(at < cancelled_at + 0.1 for event, at in events if event.startswith("token"))
    answers = staying.take(40)  # the other stream, on the same model and server, went on
    staying.close()
    assert _tokens(answers) == list(range(40)) and {a.infer_response.id for _, a in answers} == {"b"}
    assert staying.status == grpc.StatusCode.OK and _log(other_log)[-1][0] == "done"


def test_a_stream_whose_deadline_passes_ends_with_deadline_exceeded_and_is_cancelled_upstream(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    log = tmp_path / "late.log"
    started = time.time()
    late = Stream(gateway.address, timeout=0.4)
    late.send(generate(500, 20, "late", log))
    late._reader.join(5)
    assert late.status == grpc.StatusCode.DEADLINE_EXCEEDED
    stopped = [at for event, at in _until_cancelled(log) if event.startswith("cancelled")]
    assert stopped and stopped[0] - (started + 0.4) < 0.1


def test_answers_keep_the_callers_id_and_the_empty_final_answer_only_when_asked_for(gateway: GatewayProcess) -> None:
    stream = Stream(gateway.address)
    stream.send(generate(3, 0, "plain"))
    stream.send(generate(2, 0, "wants-final", empty_final=True))
    stream.close()
    answers = [answer for _, answer in list(stream.answers.queue)]
    plain = [a for a in answers if a.infer_response.id == "plain"]
    final = [a for a in answers if a.infer_response.id == "wants-final"]
    assert len(plain) == 3 and all(not a.infer_response.parameters["triton_final_response"].bool_param for a in plain)
    assert len(final) == 3 and final[-1].infer_response.parameters["triton_final_response"].bool_param
    assert not final[-1].infer_response.outputs and stream.status == grpc.StatusCode.OK


def _pool_stats(gateway: GatewayProcess) -> apb.PoolStats:
    with grpc.insecure_channel(gateway.admin_address) as channel:
        stub = admin_pb2_grpc.GatewayAdminStub(channel)
        return stub.GetPoolStats(apb.GetPoolStatsRequest(), metadata=AUTH, timeout=5).pools[0]


@pytest.fixture
def one_slot(triton: TritonCli, tmp_path: Path) -> Iterator[GatewayProcess]:
    args = ["--upstream", triton.address, "--max-inflight", "1", "--max-queue", "1"]
    with running_gateway([*args, "--admin-port", "0", "--admin-token", TOKEN], tmp_path / "gateway.log") as gateway:
        yield gateway


def test_streamed_requests_hold_their_slot_until_their_last_answer_and_are_shed_in_stream(
    one_slot: GatewayProcess,
) -> None:
    first, second, third = (Stream(one_slot.address) for _ in range(3))
    first.send(generate(15, 20, "first"))  # holds the one slot for ~300 ms
    first.take(1)
    second.send(generate(1, 0, "second"))  # waits in the queue of one
    time.sleep(0.1)
    third.send(generate(1, 0, "third"))  # the queue is full: shed, in its stream
    [(_, shed)] = third.take(1)
    assert "is at capacity" in shed.error_message and shed.infer_response.id == "third"
    parameters = shed.infer_response.parameters
    assert parameters["grpc_status"].string_param == "RESOURCE_EXHAUSTED"
    assert parameters["retry-after-ms"].int64_param > 0
    first_answers = first.take(14)
    [(second_at, answer)] = second.take(1)
    assert answer.infer_response.id == "second" and not answer.error_message
    assert second_at >= first_answers[-1][0]  # admitted only once the first had its last answer
    for stream in (first, second, third):
        stream.close()
        assert stream.status == grpc.StatusCode.OK
    stats = _pool_stats(one_slot)
    assert (stats.admitted, stats.in_flight, stats.queued, stats.shed) == (2, 0, 0, 1)


@pytest.fixture
def observed(triton: TritonCli, tmp_path: Path) -> Iterator[tuple[GatewayProcess, Path]]:
    access_log = tmp_path / "access.jsonl"
    args = ["--upstream", triton.address, "--metrics-port", "0", "--access-log", str(access_log)]
    with running_gateway([*args, "--admin-port", "0", "--admin-token", TOKEN], tmp_path / "gateway.log") as gateway:
        yield gateway, access_log


def test_streamed_requests_are_measured_per_variant(observed: tuple[GatewayProcess, Path], tmp_path: Path) -> None:
    gateway, access_log = observed
    stream = Stream(gateway.address)
    for index in range(3):
        stream.send(generate(5, 10, f"r{index}"))
    stream.take(15)
    stream.close()
    leaving = Stream(gateway.address)
    leaving.send(generate(500, 10, "gone"))
    leaving.take(2)
    leaving.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with grpc.insecure_channel(gateway.admin_address) as channel:
            stub = admin_pb2_grpc.GatewayAdminStub(channel)
            stats = stub.GetStreamStats(apb.GetStreamStatsRequest(model="generate"), metadata=AUTH, timeout=5).stats
        if stats and stats[0].requests == 4:
            break
        time.sleep(0.05)
    [stat] = stats
    assert (stat.done, stat.cancelled, stat.failed, stat.broken) == (3, 1, 0, 0)
    assert stat.responses >= 17 and 0 < stat.first_response_p50_ms < stat.first_response_p99_ms < 250
    assert 0 < stat.gap_p50_ms <= stat.gap_p99_ms < 250  # ~10 ms apart, as the Python backend delivers them
    metrics = urllib.request.urlopen(f"http://{gateway.metrics_address}/metrics", timeout=5).read().decode()
    series = f'model="generate",variant="{stat.variant}"'
    assert f"gateway_stream_first_response_seconds_count{{{series}}} 4.0" in metrics
    assert f'gateway_stream_requests_total{{ended="cancelled",{series}}} 1.0' in metrics
    assert f"gateway_stream_responses_per_request_count{{{series}}} 4.0" in metrics

    def streamed() -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in access_log.read_text().splitlines()] if access_log.exists() else []
        return [e for e in entries if e["method"] == "ModelStreamInfer/request"]

    deadline = time.monotonic() + 5
    while len(streamed()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    requests = streamed()
    assert sorted(e["ended"] for e in requests) == ["cancelled", "done", "done", "done"]
    assert all(e["first_response_ms"] > 0 and e["model"] == "generate" for e in requests)
    ctl = [str(Path(sys.executable).parent / "gatewayctl"), "--admin", gateway.admin_address, "--token", TOKEN]
    shown = subprocess.run([*ctl, "stream-stats", "generate"], capture_output=True, text=True, check=False,
                           env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert shown.returncode == 0 and "generate" in shown.stdout and stat.variant in shown.stdout, shown.stderr


class _Generating:
    """Callers each on a stream of their own, one request of 3 tokens after another, until stopped."""

    def __init__(self, address: str, callers: int) -> None:
        self.failed: list[str] = []
        self.requests = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(address,), daemon=True) for _ in range(callers)]
        for thread in self._threads:
            thread.start()

    def _run(self, address: str) -> None:
        stream = Stream(address)
        while not self._stop.is_set():
            stream.send(generate(3, 5, "turn"))
            try:
                answers = stream.take(3)
            except queue.Empty:
                self.failed.append("no answer in 10 s")
                break
            self.failed += [a.error_message for _, a in answers if a.error_message]
            self.requests += 1
        stream.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize(("candidate", "phase"), [("3", "Succeeded"), ("2", "RolledBack")])
def test_a_generative_canary_is_promoted_or_rolled_back_on_its_first_answers(
    triton: TritonCli, tmp_path: Path, candidate: str, phase: str
) -> None:
    variants = [{"name": v, "pool": "main", "model": "generate", "version": v, "weight": 100 if v == "1" else 0}
                for v in ("1", "2", "3")]  # fmt: skip
    config = {
        "pools": {"main": {"endpoints": [triton.address]}},
        "routes": {"generate": {"variants": variants}},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "rollouts": {"tick_s": 0.2, "state_file": str(tmp_path / "rollouts.json")},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        traffic = _Generating(gateway.address, callers=4)
        try:
            admin = Admin(gateway.admin_address)
            # Version 2 is 80 ms slower to its first answer: a margin of 40 ms keeps a loaded
            # machine's noise from failing the good candidate, one failed window is forgiven.
            gates = yaml.safe_dump({"first_response": {"offset_ms": 40}})
            spec = apb.RolloutSpec(model="generate", candidate=candidate, baseline="1", steps=[25, 50], interval_s=2.0,
                                   min_requests=60, failure_limit=1, analysis_yaml=gates)  # fmt: skip
            admin.stub.StartRollout(apb.StartRolloutRequest(spec=spec), metadata=AUTH, timeout=10)
            deadline = time.monotonic() + 40
            status = admin.stub.GetRollout(apb.GetRolloutRequest(model="generate"), metadata=AUTH, timeout=10)
            while status.phase not in ("Succeeded", "RolledBack", "Paused") and time.monotonic() < deadline:
                time.sleep(0.2)
                status = admin.stub.GetRollout(apb.GetRolloutRequest(model="generate"), metadata=AUTH, timeout=10)
        finally:
            traffic.stop()
    assert status.phase == phase, status.reason
    first_answers = next(g for g in status.gates if g.gate == "first_response")
    assert first_answers.verdict == ("pass" if phase == "Succeeded" else "fail"), first_answers
    assert next(g for g in status.gates if g.gate == "latency").verdict == "pass"  # no unary calls to judge
    if phase == "RolledBack":
        assert "first_response" in status.reason
    assert not traffic.failed and traffic.requests > 100


def _prompt_request(model: str, prompt: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="PROMPT", datatype="INT32", shape=[len(prompt)])
    request.raw_input_contents.append(prompt.astype(np.int32).tobytes())
    return request


def _cached_blocks(address: str, model: str, prompt: np.ndarray, session: str = "") -> int:
    """One turn of a conversation on a stream of its own: the prompt's blocks the replica had."""
    metadata = (("x-session-id", session),) if session else ()
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([_prompt_request(model, prompt)]), metadata=metadata, timeout=10))
    assert answers and not answers[0].error_message, answers
    cached = answers[0].infer_response.raw_output_contents[1]
    return int(np.frombuffer(cached, np.int32)[0])


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two Tritons serving the prefix-cache model, each with a cache of its own."""
    repository = tmp_path / "models"
    shutil.copytree(Path(__file__).resolve().parents[2] / "deploy" / "models" / "prefix_cache",
                    repository / "prefix_cache")  # fmt: skip
    with (
        running_triton(tmp_path / "a.log", model_repository=repository) as first,
        running_triton(tmp_path / "b.log", model_repository=repository) as second,
    ):
        yield first.address, second.address


def test_turns_of_a_conversation_go_to_the_replica_that_holds_their_prefix(
    two_replicas: tuple[str, str], tmp_path: Path
) -> None:
    affinity = {"input": "PROMPT", "block_size": 16}
    variant = {"name": "1", "pool": "gen", "model": "prefix_cache", "weight": 100}
    config = {
        "pools": {"gen": {"endpoints": list(two_replicas), "lb_policy": "round_robin"}},
        "routes": {"chat": {"variants": [variant], "affinity": affinity}, "chat_rr": {"variants": [variant]}},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(5)
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        for route in ("chat", "chat_rr"):
            prompt, hits = rng.integers(0, 30_000, 48), []
            for _ in range(6):  # each turn: the conversation so far, and 32 tokens more
                hits.append((_cached_blocks(gateway.address, route, prompt), len(prompt) // 16))
                prompt = np.concatenate([prompt, rng.integers(0, 30_000, 32)])
            previous_blocks = [blocks for _, blocks in hits[:-1]]
            if route == "chat":  # every turn found all of the turn before on its replica
                assert [cached for cached, _ in hits[1:]] == previous_blocks, hits
            else:  # round robin: each turn lands on the replica that saw the turn before last only
                assert [cached for cached, _ in hits[2:]] == previous_blocks[:-1] and hits[1][0] == 0, hits
        stats = _pool_stats(gateway).affinity
        assert (stats["new"], stats["prefix"]) == (1, 5)
        words = [rng.integers(0, 30_000, 40) for _ in range(4)]  # nothing in common but the session
        firsts = [_cached_blocks(gateway.address, "chat", w, session="conversation-1") for w in words]
        assert firsts == [0, 0, 0, 0] and _pool_stats(gateway).affinity["session"] == 3


def test_a_shadowed_stream_is_copied_after_its_last_answer_and_compared(triton: TritonCli, tmp_path: Path) -> None:
    variants = [{"name": v, "pool": "main", "model": "generate", "version": v, "weight": 100 if v == "1" else 0}
                for v in ("1", "2")]  # fmt: skip
    config = {
        "pools": {"main": {"endpoints": [triton.address]}},
        "routes": {"generate": {"variants": variants, "shadows": [{"variant": "2", "fraction": 1.0}]}},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        stream = Stream(gateway.address)
        for index in range(3):
            stream.send(generate(6, 2, f"r{index}"))
        answers = stream.take(18)
        stream.close()
        assert sorted(_tokens(answers)) == sorted(list(range(6)) * 3)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with grpc.insecure_channel(gateway.admin_address) as channel:
                stub = admin_pb2_grpc.GatewayAdminStub(channel)
                request = apb.GetShadowStatsRequest(model="generate")
                stats = stub.GetShadowStats(request, metadata=AUTH, timeout=5).stats
            if stats and stats[0].compared == 3:
                break
            time.sleep(0.1)
    [stat] = stats
    assert (stat.primary, stat.variant, stat.sent, stat.failed) == ("1", "2", 3, 0)
    assert (stat.compared, stat.streams, stat.exact_matches, stat.first_k_agreements) == (3, 3, 3, 3)
    # version 2 is 80 ms slower to its first token: the comparison says so
    assert stat.first_response_pairs == 3 and stat.shadow_first_response_ms > stat.primary_first_response_ms


def test_streamed_answers_are_cached_when_the_route_or_the_caller_asks(triton: TritonCli, tmp_path: Path) -> None:
    variant = {"name": "1", "pool": "main", "model": "generate", "version": "1", "weight": 100}
    config = {
        "pools": {"main": {"endpoints": [triton.address]}},
        "routes": {
            "generate": {"variants": [variant], "cache": {"streams": True}},
            "generate_opt_in": {"variants": [variant], "cache": {}},
        },
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))

    def turn(model: str, request_id: str, log: Path, **parameters: bool) -> list[pb.ModelStreamInferResponse]:
        request = generate(5, 2, request_id, log, empty_final=parameters.pop("empty_final", False))
        request.model_name = model
        for name, value in parameters.items():
            request.parameters[name].bool_param = value
        stream = Stream(gateway.address)
        stream.send(request)
        stream.close()
        return [answer for _, answer in list(stream.answers.queue)]

    with running_gateway(["--config", str(path)], tmp_path / "gateway.log") as gateway:
        log = tmp_path / "cached.log"
        first = turn("generate", "a", log)
        again = turn("generate", "b", log, empty_final=True)
        assert _tokens([(0, a) for a in first]) == _tokens([(0, a) for a in again[:-1]]) == list(range(5))
        assert {a.infer_response.id for a in again} == {"b"}
        assert all(a.infer_response.parameters["x-cache"].string_param == "hit-l1" for a in again[:-1])
        assert again[-1].infer_response.parameters["triton_final_response"].bool_param  # asked for: replayed
        assert [e for e, _ in _log(log)].count("done") == 1  # generated once
        plain, asked = tmp_path / "plain.log", tmp_path / "asked.log"
        for _ in range(2):
            turn("generate_opt_in", "c", plain)
            turn("generate_opt_in", "d", asked, cache_stream=True)
        assert [e for e, _ in _log(plain)].count("done") == 2 and [e for e, _ in _log(asked)].count("done") == 1
