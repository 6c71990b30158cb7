"""The audit trail's records and their hash chain, pure.

Every record carries the digest of the one before it (`prev`) and its own (`digest`: SHA-256 of
its canonical JSON without `digest`), so removing, reordering or editing a record breaks the
chain at a place `verify` names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GENESIS", "Broken", "digest_of", "link", "verify"]

GENESIS = "0" * 64  # the `prev` of a chain's first record
FIELDS = ("id", "time", "actor", "action", "target", "before", "after", "reason", "prev")


def digest_of(record: Mapping[str, Any]) -> str:
    body = {key: record.get(key) for key in FIELDS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def link(fields: Mapping[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """The record that follows `prev` as number `seq` of its chain."""
    record = {key: fields.get(key) for key in FIELDS if key not in ("id", "prev")}
    record |= {"id": seq, "prev": prev}
    record["digest"] = digest_of(record)
    return record


@dataclass(frozen=True, slots=True)
class Broken:
    id: Any  # the first record that does not verify
    reason: str


def verify(records: Iterable[Mapping[str, Any]]) -> tuple[int, Broken | None]:
    """How many records verify, and the first that does not (None: the whole chain holds)."""
    prev, count = None, 0
    for record in records:
        if prev is not None and record.get("prev") != prev:
            return count, Broken(record.get("id"), "its prev is not the digest of the record before it "
                                                   "(a record was removed, reordered or changed)")  # fmt: skip
        if digest_of(record) != record.get("digest"):
            return count, Broken(record.get("id"), "its digest does not match its content (it was edited)")
        prev, count = record["digest"], count + 1
    return count, None
