"""Where audit records go: an append-only JSON-lines file (or memory, bounded, without one), and
a Redis stream when replicas share state. Each destination keeps its own chain.

Who acted is a name: the admin token's name, `rollout/<model>` for the rollout controller,
`config` for a reload, `discovery` for routes the gateway built. Callers set it for the
changes they make with `acting_as`; route changes are recorded from the RouteStore's events,
so none is missed whoever makes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError, WatchError

from gateway.audit.chain import GENESIS, link
from gateway.errors import UpstreamUnavailable

__all__ = ["AuditTrail", "acting_as", "current_actor", "read_trail"]

log = logging.getLogger(__name__)
_ACTOR: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("audit_actor", default=("", ""))


@contextlib.contextmanager
def acting_as(actor: str, reason: str = "") -> Iterator[None]:
    token = _ACTOR.set((actor, reason))
    try:
        yield
    finally:
        _ACTOR.reset(token)


def current_actor() -> tuple[str, str]:
    return _ACTOR.get()


def read_trail(path: Path) -> list[dict[str, Any]]:
    """A trail file's records, oldest first (a line that is not JSON stays, named by its line)."""
    records = []
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    records.append({"id": f"line {number}", "unreadable": line[:200]})
    return records


class AuditTrail:
    def __init__(self, path: Path | None = None, redis_url: str | None = None, namespace: str = "tgw:",
                 memory: int = 10_000) -> None:  # fmt: skip
        self.path = path
        self._memory: deque[dict[str, Any]] = deque(maxlen=memory)
        self._seq, self._prev = 0, GENESIS
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():  # carry on the chain a previous run wrote
                existing = read_trail(path)
                if existing and "digest" in existing[-1]:
                    self._seq, self._prev = int(existing[-1]["id"]), existing[-1]["digest"]
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=2.0) if redis_url else None
        self._stream, self._head = f"{namespace}audit", f"{namespace}audit:head"
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=10_000)
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0

    def record(self, action: str, target: str, before: Any = None, after: Any = None, reason: str = "",
               actor: str = "") -> dict[str, Any]:  # fmt: skip
        """Append a record; the actor and reason default to those `acting_as` set."""
        context_actor, context_reason = current_actor()
        fields = {"time": time.time(), "actor": actor or context_actor or "gateway", "action": action,
                  "target": target, "before": before, "after": after, "reason": reason or context_reason}  # fmt: skip
        self._seq += 1
        record = link(fields, self._seq, self._prev)
        self._prev = record["digest"]
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        else:
            self._memory.append(record)
        if self._redis is not None:
            try:
                self._queue.put_nowait(fields)
                if self._writer is None or self._writer.done():
                    self._writer = asyncio.get_running_loop().create_task(self._write_shared())
            except (asyncio.QueueFull, RuntimeError):
                self.dropped += 1
                log.error("audit record not written to redis (queue full or no loop): %s %s", action, target)
        return record

    async def _append_shared(self, fields: Mapping[str, Any]) -> None:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._head)
                    head = await pipe.get(self._head)
                    seq, prev = (json.loads(head)["seq"], json.loads(head)["digest"]) if head else (0, GENESIS)
                    record = link(fields, seq + 1, prev)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.xadd(self._stream, {"record": json.dumps(record, sort_keys=True)})
                    pipe.set(self._head, json.dumps({"seq": seq + 1, "digest": record["digest"]}))
                    await pipe.execute()
                    return
                except WatchError:  # another replica appended first: chain after its record
                    continue

    async def _write_shared(self) -> None:
        while not self._queue.empty():
            fields = self._queue.get_nowait()
            for attempt in range(3):
                try:
                    await self._append_shared(fields)
                    break
                except (RedisError, OSError) as exc:
                    if attempt == 2:
                        self.dropped += 1
                        log.error("audit record not written to redis: %s", exc)
                    await asyncio.sleep(0.2 * (attempt + 1))

    async def records(self) -> list[dict[str, Any]]:
        """The trail, oldest first: the shared stream when there is one, else the file or memory."""
        if self._redis is not None:
            if self._writer is not None:
                await asyncio.wait([self._writer], timeout=2.0)
            try:
                entries = await self._redis.xrange(self._stream) or []
            except (RedisError, OSError) as exc:
                raise UpstreamUnavailable(f"the shared audit trail cannot be read: redis: {exc}") from exc
            return [json.loads(fields[b"record"]) for _id, fields in entries if fields]
        if self.path is not None:
            return read_trail(self.path) if self.path.exists() else []
        return list(self._memory)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=2.0)
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
