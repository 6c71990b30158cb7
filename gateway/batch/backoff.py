"""How long a batch record waits before it is sent again (pure): exponential back-off from at
least the server's `retry-after-ms` and at least 50 ms, within a total time per record."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Backoff", "retry_after_ms"]


@dataclass(frozen=True, slots=True)
class Backoff:
    max_total_s: float = 60.0  # a record is given up once its retries would wait past this
    first_s: float = 0.05
    longest_s: float = 10.0  # one wait, at most (unless the server asks for more)

    def delay(self, attempt: int, retry_after_ms: int | None) -> float:
        """The wait before attempt `attempt + 1` (attempt 0 is the first send that failed)."""
        exponential = min(self.first_s * 2**attempt, self.longest_s)
        asked = retry_after_ms / 1000 if retry_after_ms else 0.0
        return max(exponential, asked, self.first_s)

    def allows(self, waited_s: float, delay_s: float) -> bool:
        """Whether another wait of `delay_s` still fits, after `waited_s` spent on this record."""
        return waited_s + delay_s <= self.max_total_s


def retry_after_ms(trailing: Iterable[Any] | None) -> int | None:
    """The `retry-after-ms` of an answer's trailing metadata, if any: (key, value) pairs, as a
    tuple or grpc.aio's Metadata (the grpc stubs type it otherwise)."""
    for key, value in trailing or ():
        text = value.decode() if isinstance(value, bytes) else str(value)
        if key == "retry-after-ms" and text.isdigit():
            return int(text)
    return None
