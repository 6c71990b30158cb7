"""The consumer's Redis calls: the group made, entries read and claimed, and a block of results
committed in one atomic script: each entry's output (or dead letter) written unless one was
written for it already, and the entry acknowledged. Every key lives on one Redis (no cluster)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["Entry", "Written", "commit", "ensure_group", "lag", "read_claimed", "read_new"]

Entry = tuple[str, dict[bytes, bytes]]  # (id, fields)
Written = tuple[str, str, dict[bytes, bytes]]  # (input id, "output" | "dead", fields)

# KEYS: input, output, dead letters. ARGV: group, marker TTL (s), marker prefix, entry count, then
# per entry: its id, where to ("output" | "dead"), its field count, the fields. An entry whose marker
# exists was answered before (a redelivery after a crash between commit and ack cannot happen, but
# one between prediction and commit can): it is acknowledged, not written again.
_COMMIT = """
local group, ttl, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local count, at, written = tonumber(ARGV[4]), 5, 0
for _ = 1, count do
  local id, where, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local fields = {}
  for f = 1, 2 * n do fields[f] = ARGV[at + 2 + f] end
  at = at + 3 + 2 * n
  if redis.call('SET', prefix .. id, '1', 'NX', 'EX', ttl) then
    redis.call('XADD', where == 'dead' and KEYS[3] or KEYS[2], '*', unpack(fields))
    written = written + 1
  end
  redis.call('XACK', KEYS[1], group, id)
end
return written
"""


async def ensure_group(redis: Redis, stream: str, group: str, from_start: bool) -> None:
    """The consumer group (and the stream) made unless there: reading from the stream's start, or
    from the entries added after it was made."""
    try:
        await redis.xgroup_create(stream, group, id="0" if from_start else "$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(raw: Any) -> list[Entry]:
    return [(_id(entry_id), fields) for entry_id, fields in raw or [] if fields is not None]


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_new(redis: Redis, stream: str, group: str, consumer: str, count: int, block_ms: int,
                   pending_after: str | None = None) -> list[Entry]:  # fmt: skip
    """Entries never delivered; or, given `pending_after`, this consumer's own unacknowledged ones
    with a later id (read from "0" on, each read going on from the last id of the one before)."""
    start = ">" if pending_after is None else pending_after
    answer: Any = await redis.xreadgroup(group, consumer, {stream: start}, count=count,
                                         block=block_ms if pending_after is None else None)  # fmt: skip
    return [entry for _, entries in answer or [] for entry in _entries(entries)]


async def read_claimed(redis: Redis, stream: str, group: str, consumer: str, min_idle_ms: int, cursor: str,
                       count: int) -> tuple[str, list[Entry]]:  # fmt: skip
    """Entries pending longer than `min_idle_ms` with any consumer (one that died, or this one's own
    that failed for now), claimed for this one; and the cursor to go on from ("0-0": round done)."""
    answer = await redis.xautoclaim(stream, group, consumer, min_idle_ms, start_id=cursor, count=count)
    return _id(answer[0]), _entries(answer[1])


async def commit(redis: Redis, keys: tuple[str, str, str], group: str, ttl_s: int, written: Sequence[Written]) -> int:
    """Write each entry's output or dead letter unless one was written for it, and acknowledge it,
    all in one step; the entries written (others were answered before)."""
    if not written:
        return 0
    args: list[Any] = [group, ttl_s, f"{keys[1]}:done:", len(written)]
    for entry_id, where, fields in written:
        args += [entry_id, where, len(fields)]
        for key, value in fields.items():
            args += [key, value]
    return int(await redis.eval(_COMMIT, 3, *keys, *args))


async def lag(redis: Redis, stream: str, group: str) -> tuple[int, int]:
    """Entries not yet delivered to the group, and entries delivered but not acknowledged."""
    groups: Any = await redis.xinfo_groups(stream)
    for info in groups:
        if _id(info.get("name") or b"") == group:
            return int(info.get("lag") or 0), int(info.get("pending") or 0)
    return 0, 0
