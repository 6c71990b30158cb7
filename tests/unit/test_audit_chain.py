"""The audit trail's hash chain: it verifies as written and names the first record that breaks."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

from gateway.audit import AuditTrail, acting_as, verify
from gateway.audit.chain import GENESIS


def _trail(path: Path | None = None) -> list[dict[str, object]]:
    trail = AuditTrail(path)
    with acting_as("ops", "planned"):
        trail.record("route.weights", "m", before={"w": 1}, after={"w": 2})
    trail.record("rollout.transition", "m", after={"phase": "Canary"}, actor="rollout/m")
    trail.record("cache.invalidate", "*", after={"removed": 3})
    return asyncio.run(trail.records())


def test_records_chain_and_carry_who_and_why() -> None:
    records = _trail()
    assert [r["id"] for r in records] == [1, 2, 3] and records[0]["prev"] == GENESIS
    assert (records[0]["actor"], records[0]["reason"]) == ("ops", "planned")
    assert records[1]["actor"] == "rollout/m" and records[2]["actor"] == "gateway"
    assert all(later["prev"] == earlier["digest"] for earlier, later in itertools.pairwise(records))
    assert verify(records) == (3, None)


def test_edits_removals_and_reordering_are_named() -> None:
    records = _trail()
    edited = [dict(r) for r in records]
    edited[1]["after"] = {"phase": "Succeeded"}
    count, broken = verify(edited)
    assert count == 1 and broken is not None and broken.id == 2 and "edited" in broken.reason
    count, broken = verify([records[0], records[2]])
    assert count == 1 and broken is not None and broken.id == 3 and "removed" in broken.reason
    count, broken = verify([records[1], records[0], records[2]])
    assert broken is not None and broken.id == 1


def test_a_file_trail_carries_on_its_chain_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _trail(path)
    records = _trail(path)  # a second process appends to the same file
    assert [r["id"] for r in records] == [1, 2, 3, 4, 5, 6] and verify(records) == (6, None)
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["digest"] for line in lines)
