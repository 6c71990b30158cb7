"""`gateway stream`: a Redis Stream consumed in a consumer group, each block of entries predicted
through the gateway (or any v2 server) as batched requests, and committed: every entry's
prediction (or, when it failed for good, its dead letter) written and the entry acknowledged in
one atomic step. An entry is acknowledged only once its output is written, and written once
however often it is delivered (a marker per input id), so no input is lost and none is answered
twice. Entries that fail in a way a later try may not (shed, unavailable, timed out, past the
retries) stay pending; they, and the pending entries of a consumer that died, are claimed after
`claim_idle_ms` by whichever consumer of the group looks first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.batch import calls
from gateway.batch.calls import CallOptions, ModelError, rows_per_request
from gateway.stream import redis_ops
from gateway.stream.entries import RawInput, dead_fields, output_fields, record_of, route_of

__all__ = ["ModelError", "StreamOptions", "StreamStats", "run_stream", "run_until_signalled"]

log = logging.getLogger(__name__)


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class StreamOptions:
    model: str
    input: str
    output: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    dead_letter: str = ""  # "": INPUT:dead
    group: str = "gateway"
    consumer: str = field(default_factory=_consumer_name)
    target: str = "127.0.0.1:8001"
    version: str = ""
    priority: str = ""  # x-priority; "": the gateway's default class
    concurrency: int = 4  # requests in flight
    block: int = 256  # entries read at once
    rows_per_request: int | None = None  # None: the model's max_batch_size
    claim_idle_ms: int = 30_000
    field: str = "inputs"
    raw: tuple[RawInput, ...] = ()
    raw_outputs: bool = False
    max_retry_s: float = 300.0
    marker_ttl_s: int = 7 * 24 * 3600
    from_start: bool = False
    metrics_port: int | None = None

    @property
    def dead(self) -> str:
        return self.dead_letter or f"{self.input}:dead"

    @property
    def calls(self) -> CallOptions:
        return CallOptions(model=self.model, target=self.target, version=self.version, priority=self.priority,
                           max_retry_s=self.max_retry_s)  # fmt: skip


class StreamStats:
    """The consumer's counts, as Prometheus series (on `--metrics-port`) and for its progress line."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.consumed = Counter("gateway_stream_consumed", "Entries read (claimed ones included)",
                                registry=self.registry)  # fmt: skip
        self.claimed = Counter(
            "gateway_stream_claimed", "Entries claimed from an idle consumer", registry=self.registry
        )
        self.produced = Counter("gateway_stream_produced", "Predictions written to the output stream",
                                registry=self.registry)  # fmt: skip
        self.dead = Counter("gateway_stream_dead_lettered", "Entries written to the dead-letter stream",
                            registry=self.registry)  # fmt: skip
        self.duplicates = Counter("gateway_stream_duplicates", "Redelivered entries answered before: acknowledged only",
                                  registry=self.registry)  # fmt: skip
        self.retried = Counter("gateway_stream_left_pending", "Entries left pending to be tried again",
                               registry=self.registry)  # fmt: skip
        self.lag = Gauge("gateway_stream_lag", "Entries not yet read by the group", registry=self.registry)
        self.pending = Gauge("gateway_stream_pending", "Entries read but not yet acknowledged", registry=self.registry)
        self.batch = Histogram("gateway_stream_batch_size", "Entries per block predicted", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))  # fmt: skip
        self.latency = Histogram("gateway_stream_latency_seconds", "From an entry's id (its time) to its prediction",
                                 registry=self.registry)  # fmt: skip

    def line(self) -> str:
        def value(name: str) -> int:
            return int(self.registry.get_sample_value(name) or 0)

        return (f"consumed {value('gateway_stream_consumed_total')}, produced {value('gateway_stream_produced_total')}"
                f", dead-lettered {value('gateway_stream_dead_lettered_total')}, lag {value('gateway_stream_lag')}"
                f", pending {value('gateway_stream_pending')}")  # fmt: skip


def _entry_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000.0


async def _predict(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: StreamOptions,
                   signature: calls.Signature, datatypes: dict[str, str] | None, entries: list[redis_ops.Entry],
                   redis: Redis, stats: StreamStats) -> None:  # fmt: skip
    """One block: predicted, then committed (outputs and dead letters written, entries acked)."""
    records = [record_of(i, entry_id, fields, options.field, options.raw) for i, (entry_id, fields) in
               enumerate(entries)]  # fmt: skip
    results = await calls.several(stub, options.calls, records, signature)
    inputs = {options.field.encode(), *(spec.name.encode() for spec in options.raw)}
    written: list[redis_ops.Written] = []
    for (entry_id, fields), (_, ok, line) in zip(entries, results, strict=True):
        route = route_of(ok, line)
        if route == "output":
            written.append((entry_id, "output", output_fields(entry_id, fields, line, inputs, datatypes)))
        elif route == "dead":
            written.append((entry_id, "dead", dead_fields(entry_id, fields, line)))
        else:
            stats.retried.inc()
    count = await redis_ops.commit(redis, (options.input, options.output, options.dead), options.group,
                                   options.marker_ttl_s, written)  # fmt: skip
    now = time.time()
    for entry_id, where, _ in written:
        (stats.produced if where == "output" else stats.dead).inc()
        stats.latency.observe(max(0.0, now - _entry_time(entry_id)))
    stats.duplicates.inc(len(written) - count)
    stats.batch.observe(len(entries))


async def _datatypes(stub: service_pb2_grpc.GRPCInferenceServiceStub, options: StreamOptions) -> dict[str, str]:
    metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=options.model, version=options.version),
                                        timeout=30)  # fmt: skip
    return {output.name: output.datatype for output in metadata.outputs}


async def run_stream(options: StreamOptions, stop: asyncio.Event | None = None, show_progress: bool = False) -> None:
    """Consume until `stop` is set (or forever): the blocks under way finish and are committed."""
    stop = stop or asyncio.Event()
    stats = StreamStats()
    if options.metrics_port is not None:
        start_http_server(options.metrics_port, registry=stats.registry)
    redis = Redis.from_url(options.redis_url)
    limits = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    try:
        await redis_ops.ensure_group(redis, options.input, options.group, options.from_start)
        async with grpc.aio.insecure_channel(options.target, options=limits) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            signature = await calls.signature(stub, options.calls)
            datatypes = await _datatypes(stub, options) if options.raw_outputs else None
            rows = rows_per_request(options.rows_per_request, options.calls.max_request_bytes,
                                    await calls.max_batch_size(stub, options.calls), 0)  # fmt: skip
            await _consume(options, stop, stats, redis, stub, signature, datatypes, rows, show_progress)
    finally:
        await redis.aclose()


async def _consume(options: StreamOptions, stop: asyncio.Event, stats: StreamStats, redis: Redis,
                   stub: service_pb2_grpc.GRPCInferenceServiceStub, signature: calls.Signature,
                   datatypes: dict[str, str] | None, rows: int, show_progress: bool) -> None:  # fmt: skip
    lanes = asyncio.Semaphore(options.concurrency)
    under_way: set[asyncio.Task[None]] = set()
    cursor, claimed_at, shown_at = "0-0", 0.0, 0.0
    # After a restart under the same name: its own unacknowledged entries first, each read going on
    # from the last id of the one before (None once they are all read: new entries from then on).
    pending_after: str | None = "0"

    async def predict(block: list[redis_ops.Entry]) -> None:
        try:
            await _predict(stub, options, signature, datatypes, block, redis, stats)
        except (grpc.aio.AioRpcError, RedisError, OSError) as exc:  # the block stays pending, claimed again
            log.warning("a block of %d entries stays pending: %s", len(block), exc)
        finally:
            lanes.release()

    while not stop.is_set():
        now = time.monotonic()
        entries: list[redis_ops.Entry] = []
        if now - claimed_at >= options.claim_idle_ms / 4000:  # a few looks per idle time
            cursor, entries = await redis_ops.read_claimed(redis, options.input, options.group, options.consumer,
                                                           options.claim_idle_ms, cursor, options.block)  # fmt: skip
            stats.claimed.inc(len(entries))
            if cursor == "0-0":
                claimed_at = now
        if not entries:
            entries = await redis_ops.read_new(redis, options.input, options.group, options.consumer,
                                               options.block, 500, pending_after)  # fmt: skip
            if pending_after is not None:
                pending_after = entries[-1][0] if entries else None
        stats.consumed.inc(len(entries))
        for start in range(0, len(entries), rows):
            await lanes.acquire()
            task = asyncio.create_task(predict(entries[start : start + rows]))
            under_way.add(task)
            task.add_done_callback(under_way.discard)
        if now - shown_at >= 1.0:
            shown_at = now
            lag, pending = await redis_ops.lag(redis, options.input, options.group)
            stats.lag.set(lag)
            stats.pending.set(pending)
            if show_progress:
                print(f"\r{stats.line()}", end="", file=sys.stderr, flush=True)
    if under_way:
        await asyncio.gather(*under_way, return_exceptions=True)
    if show_progress:
        print(f"\r{stats.line()}", file=sys.stderr, flush=True)


async def run_until_signalled(options: StreamOptions, show_progress: bool) -> None:
    """`run_stream` until SIGTERM or SIGINT: the blocks under way are finished and committed."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await run_stream(options, stop, show_progress)
