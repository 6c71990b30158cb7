"""Batch retries: exponential from at least the server's retry-after-ms and at least 50 ms, within a
total time per record (issue 27, finding 5: a record gave up after 6 tries 2 ms apart)."""

from __future__ import annotations

from gateway.batch.backoff import Backoff, retry_after_ms


def test_waits_grow_from_50_ms_and_never_undercut_the_server() -> None:
    backoff = Backoff(max_total_s=60.0)
    assert [backoff.delay(n, None) for n in range(4)] == [0.05, 0.1, 0.2, 0.4]
    assert backoff.delay(0, 1) == 0.05  # a 1 ms hint: still 50 ms
    assert backoff.delay(0, 989) == 0.989 and backoff.delay(5, 989) == 1.6
    assert backoff.delay(30, None) == 10.0  # one wait is capped
    assert backoff.delay(30, 30_000) == 30.0  # unless the server asks for more


def test_a_record_retries_until_its_time_is_spent_not_a_count() -> None:
    backoff, waited, attempts = Backoff(max_total_s=5.0), 0.0, 0
    while backoff.allows(waited, delay := backoff.delay(attempts, 2)):
        waited, attempts = waited + delay, attempts + 1
    assert 3.0 < waited <= 5.0 and attempts == 6  # 0.05 .. 1.6 s: far more than 6 x 2 ms


def test_the_hint_is_read_from_trailing_metadata() -> None:
    assert retry_after_ms((("x-other", "1"), ("retry-after-ms", "250"))) == 250
    assert retry_after_ms((("retry-after-ms", "soon"),)) is None and retry_after_ms(None) is None
