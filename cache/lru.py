"""Tier 1: an in-process LRU of serialized responses, bounded by bytes, with per-entry expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["ByteLRU"]


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float


class ByteLRU:
    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, value: bytes, ttl_s: float) -> bool:
        """Store unless the value alone exceeds the bound; least recently used entries make room."""
        if len(value) > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        self._entries[key] = _Entry(value, self._clock() + ttl_s)
        self.bytes += len(value)
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: Hashable) -> None:
        self.bytes -= len(self._entries.pop(key).value)

    def discard_where(self, predicate: Callable[[Hashable], bool]) -> int:
        doomed = [key for key in self._entries if predicate(key)]
        for key in doomed:
            self._drop(key)
        return len(doomed)
