"""Admission control through a real gateway in front of Triton's `slow` model."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.local.processes import GatewayProcess
from gateway_admin import admin_pb2 as apb
from gateway_admin import admin_pb2_grpc
from tests.procs import TritonCli, running_gateway
from tests.traffic import AUTH, TOKEN

Outcome = tuple[str, float, str, dict[str, str]]  # code name, seconds, details, trailing metadata


def _slow(delay_ms: float) -> bytes:
    request = pb.ModelInferRequest(model_name="slow")
    request.inputs.add(name="DELAY_MS", datatype="FP32", shape=[1, 1])
    request.raw_input_contents.append(np.array([[delay_ms]], np.float32).tobytes())
    return request.SerializeToString()


async def _send(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    payload: bytes,
    timeout: float | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Outcome:
    started = time.perf_counter()
    call = stub.ModelInfer(pb.ModelInferRequest.FromString(payload), timeout=timeout, metadata=metadata)
    try:
        await call
        code, details = "OK", ""
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    trailing = dict(await call.trailing_metadata() or ())
    return code, time.perf_counter() - started, details, {k: str(v) for k, v in trailing.items()}


def _pool_stats(gateway: GatewayProcess) -> apb.PoolStats:
    with grpc.insecure_channel(gateway.admin_address) as channel:
        stub = admin_pb2_grpc.GatewayAdminStub(channel)
        return stub.GetPoolStats(apb.GetPoolStatsRequest(), metadata=AUTH, timeout=5).pools[0]


def _limited(triton: TritonCli, tmp_path: Path, inflight: int, queue: int) -> Generator[GatewayProcess]:
    args = ["--upstream", triton.address, "--max-inflight", str(inflight), "--max-queue", str(queue)]
    with running_gateway([*args, "--admin-port", "0", "--admin-token", TOKEN], tmp_path / "gateway.log") as gateway:
        yield gateway


@pytest.fixture
def narrow(triton: TritonCli, tmp_path: Path) -> Iterator[GatewayProcess]:
    yield from _limited(triton, tmp_path, inflight=1, queue=100)


async def test_double_overload_fails_fast_and_reconciles(triton: TritonCli, tmp_path: Path) -> None:
    """Capacity ~20/s (2 in flight, 100 ms each); offered 40/s for 3 s with 400 ms deadlines.
    Every request succeeds, is shed at once (RESOURCE_EXHAUSTED + retry-after) or expires
    (DEADLINE_EXCEEDED) no later than its deadline; the counts add up, here and in the gateway."""
    for gateway in _limited(triton, tmp_path, inflight=2, queue=4):
        deadline = 0.4
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            payload = _slow(100.0)
            await _send(stub, payload, 5.0)  # warm: the gateway learns the service time
            tasks = []
            for _ in range(120):
                tasks.append(asyncio.create_task(_send(stub, payload, deadline)))
                await asyncio.sleep(1 / 40)
            outcomes = await asyncio.gather(*tasks)
        counts = Counter(code for code, *_ in outcomes)
        expected = {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
        assert set(counts) <= expected, [outcome for outcome in outcomes if outcome[0] not in expected]
        assert counts["OK"] + counts["RESOURCE_EXHAUSTED"] + counts["DEADLINE_EXCEEDED"] == 120
        assert counts["OK"] > 20 and counts["RESOURCE_EXHAUSTED"] > 0
        assert all(seconds < deadline + 0.05 for _, seconds, *_ in outcomes)
        shed = [o for o in outcomes if o[0] == "RESOURCE_EXHAUSTED"]
        assert all(seconds < 0.1 and int(trailing["retry-after-ms"]) > 0 for _, seconds, _, trailing in shed)
        assert "is at capacity" in shed[0][2]
        expired = [o for o in outcomes if o[0] == "DEADLINE_EXCEEDED"]
        assert all("deadline" in details.lower() for _, _, details, _ in expired), Counter(d for _, _, d, _ in expired)
        stats = _pool_stats(gateway)
        assert stats.shed == counts["RESOURCE_EXHAUSTED"]
        # Most expire in the gateway; a few admitted ones can still run out of time at Triton.
        assert counts["DEADLINE_EXCEEDED"] >= stats.expired + stats.cancelled >= 0.5 * counts["DEADLINE_EXCEEDED"]
        assert (stats.in_flight, stats.queued) == (0, 0)


async def test_high_priority_waits_far_less_than_low(narrow: GatewayProcess) -> None:
    async with grpc.aio.insecure_channel(narrow.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        payload = _slow(20.0)
        low = [asyncio.create_task(_send(stub, payload, 30, (("x-priority", "3"),))) for _ in range(30)]
        await asyncio.sleep(0.05)
        high = [asyncio.create_task(_send(stub, payload, 30, (("x-priority", "1"),))) for _ in range(8)]
        low_times = [o[1] for o in await asyncio.gather(*low)]
        high_times = [o[1] for o in await asyncio.gather(*high)]
    assert float(np.percentile(high_times, 99)) < 0.5 * float(np.percentile(low_times, 99))


async def test_a_flooding_tenant_does_not_starve_another(narrow: GatewayProcess) -> None:
    """Tenant `flood` queues 30 requests; `quiet` then queues 6. Taking turns, quiet's last one
    finishes within the first ~14 completions, not after all of flood's."""
    finished: list[str] = []

    async def send(stub: service_pb2_grpc.GRPCInferenceServiceStub, tenant: str) -> None:
        outcome = await _send(stub, _slow(15.0), 30, (("x-tenant", tenant),))
        assert outcome[0] == "OK"
        finished.append(tenant)

    async with grpc.aio.insecure_channel(narrow.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        flood = [asyncio.create_task(send(stub, "flood")) for _ in range(30)]
        await asyncio.sleep(0.05)
        quiet = [asyncio.create_task(send(stub, "quiet")) for _ in range(6)]
        await asyncio.gather(*flood, *quiet)
    last_quiet = max(index for index, tenant in enumerate(finished) if tenant == "quiet")
    assert last_quiet <= 15, finished


async def test_a_caller_that_leaves_is_removed_from_the_queue(narrow: GatewayProcess, triton: TritonCli) -> None:
    def executions() -> int:
        with grpc.insecure_channel(triton.address) as channel:
            stats = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                pb.ModelStatisticsRequest(name="slow", version="2"), timeout=5
            )
        return int(stats.model_stats[0].inference_count)

    before = executions()
    async with grpc.aio.insecure_channel(narrow.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        holder = asyncio.create_task(_send(stub, _slow(400.0), 10))
        await asyncio.sleep(0.1)
        leaver = stub.ModelInfer(pb.ModelInferRequest.FromString(_slow(1.0)), timeout=10)
        await asyncio.sleep(0.1)
        assert _pool_stats(narrow).queued == 1
        leaver.cancel()
        await asyncio.sleep(0.1)
        stats = _pool_stats(narrow)
        assert (stats.queued, stats.cancelled) == (0, 1)
        assert (await holder)[0] == "OK"
    assert executions() == before + 1  # only the holder ran


async def test_a_deadline_shorter_than_the_expected_wait_is_refused_at_once(narrow: GatewayProcess) -> None:
    async with grpc.aio.insecure_channel(narrow.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        await _send(stub, _slow(200.0), 5)  # the gateway learns ~200 ms per request
        holders = [asyncio.create_task(_send(stub, _slow(200.0), 5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        code, seconds, details, _ = await _send(stub, _slow(1.0), 0.3)
        await asyncio.gather(*holders)
    assert code == "DEADLINE_EXCEEDED" and seconds < 0.1
    assert "could not serve the request before its deadline" in details


async def test_retry_after_is_never_below_the_expected_service_time(triton: TritonCli, tmp_path: Path) -> None:
    """Issue 27, finding 9: a cold gateway (no service time learned) said `retry after ~1 ms`;
    now at least 10 ms, and once calls have finished, at least their service time."""
    for gateway in _limited(triton, tmp_path, inflight=1, queue=2):
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            payload = _slow(200.0)
            for burst in ("cold", "warm"):
                outcomes = await asyncio.gather(*(_send(stub, payload, 10.0) for _ in range(10)))
                hints = [int(trailing["retry-after-ms"]) for code, _, _, trailing in outcomes
                         if code == "RESOURCE_EXHAUSTED"]  # fmt: skip
                assert len(hints) >= 6, outcomes
                floor = 10 if burst == "cold" else 150  # ~200 ms a call once the gateway has seen some
                assert min(hints) >= floor, (burst, hints)


async def _open_loop(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    senders: Mapping[str, tuple[float, tuple[tuple[str, str], ...]]],
    seconds: float,
    payload: bytes,
) -> dict[str, list[Outcome]]:
    """Each sender at its rate (requests a second) with its metadata for `seconds`, open loop."""

    async def one(rate: float, metadata: tuple[tuple[str, str], ...]) -> list[Outcome]:
        tasks = []
        for _ in range(round(rate * seconds)):
            tasks.append(asyncio.create_task(_send(stub, payload, 20.0, metadata)))
            await asyncio.sleep(1 / rate)
        return list(await asyncio.gather(*tasks))

    results = await asyncio.gather(*(one(rate, metadata) for rate, metadata in senders.values()))
    return dict(zip(senders, results, strict=True))


async def _floods(
    address: str, senders: Mapping[str, tuple[float, tuple[tuple[str, str], ...]]]
) -> dict[str, list[Outcome]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return await _open_loop(stub, senders, 2.0, _slow(20.0))


def _flooded(
    triton: TritonCli, tmp_path: Path, senders: Mapping[str, tuple[float, tuple[tuple[str, str], ...]]]
) -> tuple[dict[str, list[Outcome]], apb.PoolStats]:
    """The senders for 2 s through a gateway of capacity ~50/s (one in flight, 20 ms each) and a
    queue of 8: their outcomes, and the pool's statistics after."""
    gateways = _limited(triton, tmp_path, inflight=1, queue=8)
    try:
        gateway = next(gateways)
        return asyncio.run(_floods(gateway.address, senders)), _pool_stats(gateway)
    finally:
        gateways.close()


def _codes(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(code for code, *_ in outcomes)


def test_a_flood_never_sheds_a_tenant_under_its_share(triton: TritonCli, tmp_path: Path) -> None:
    """Tenant `flood` sends 3x capacity, `quiet` a quarter of it: every one of quiet's requests is
    served (the queue full of flood's pushes flood's newest out, not quiet's arrival); flood's
    excess is shed for being over its share, and the pool's statistics say so per tenant."""
    senders = {"flood": (150.0, (("x-tenant", "flood"),)), "quiet": (12.0, (("x-tenant", "quiet"),))}
    outcomes, stats = _flooded(triton, tmp_path, senders)
    quiet, flood = _codes(outcomes["quiet"]), _codes(outcomes["flood"])
    assert quiet == Counter(OK=24), quiet
    assert flood["RESOURCE_EXHAUSTED"] > 0 and flood["OK"] > 0, flood
    details = {d for code, _, d, _ in outcomes["flood"] if code == "RESOURCE_EXHAUSTED"}
    assert all("tenant over its share" in d for d in details), details
    tenants = {share.tenant: share for share in stats.tenants}
    assert tenants["quiet"].admitted == 24 and tenants["quiet"].shed == 0
    assert tenants["flood"].shed == flood["RESOURCE_EXHAUSTED"]
    assert tenants["flood"].shed_by_reason["tenant over its share"] == flood["RESOURCE_EXHAUSTED"]
    assert stats.shed_by_reason["tenant over its share"] == stats.shed


def test_a_flood_of_the_lowest_class_never_keeps_the_highest_out(triton: TritonCli, tmp_path: Path) -> None:
    """The lowest class floods at 3x capacity, the highest sends a fifth of it: none of the
    highest class's requests is shed (they push the lowest's out of the full queue), and each
    waits behind no queued request of the lowest class."""
    senders = {"low": (150.0, (("x-priority", "3"),)), "high": (10.0, (("x-priority", "1"),))}
    outcomes, stats = _flooded(triton, tmp_path, senders)
    high, low = _codes(outcomes["high"]), _codes(outcomes["low"])
    assert high == Counter(OK=20), high
    assert low["RESOURCE_EXHAUSTED"] > 0, low
    classes = {share.priority: share for share in stats.classes}
    assert classes[1].admitted == 20 and classes[1].shed == 0
    assert classes[3].shed_by_reason["displaced by a higher priority"] > 0
    # The highest class waits at most for the request under way and those of its own class.
    assert classes[1].queue_wait_p99_ms < classes[3].queue_wait_p99_ms
