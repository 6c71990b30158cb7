"""The flow-control bench rows' pure parts: Jain's index and the queue-policy repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.fairness import QUEUED_MODEL, jain, queued_repository


def test_jain_is_one_when_equal_and_one_over_n_when_one_has_everything() -> None:
    assert jain([5.0, 5.0, 5.0, 5.0]) == pytest.approx(1.0)
    assert jain([8.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain([]) == 0.0 and jain([0.0, 0.0]) == 0.0
    assert 0.25 < jain([4.0, 2.0, 1.0, 1.0]) < 1.0


def test_the_queued_copy_of_heavy_has_triton_s_queue_policy(tmp_path: Path) -> None:
    repository = queued_repository(tmp_path)
    plain = (repository / "heavy" / "config.pbtxt").read_text()
    queued = (repository / QUEUED_MODEL / "config.pbtxt").read_text()
    assert "dynamic_batching" not in plain
    assert f'name: "{QUEUED_MODEL}"' in queued and "max_batch_size: 1" in queued
    for setting in ("priority_levels: 3", "max_queue_size: 16", "timeout_action: REJECT"):
        assert setting in queued
    assert (repository / QUEUED_MODEL / "1").is_dir()
