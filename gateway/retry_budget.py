"""Retry budget, sans-IO: every request earns `ratio` of a retry token, every retry spends one.

Over any stretch of N requests at most `ratio * N + initial` retries happen, so a failing
upstream sees at most about (1 + ratio) times the traffic: never a retry storm. Tokens are
capped, so a long quiet spell cannot save up a burst of retries.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryBudget"]


@dataclass
class RetryBudget:
    ratio: float = 0.2
    initial: float = 3.0
    max_tokens: float = 10.0
    tokens: float = -1.0  # -1: not yet set, starts at `initial`
    retries: int = 0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.initial

    def on_request(self) -> None:
        self.tokens = min(self.tokens + self.ratio, self.max_tokens)

    def try_retry(self) -> bool:
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        self.retries += 1
        return True
