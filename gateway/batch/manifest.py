"""The checkpoint of a batch run: how many records (a prefix, in input order) have their result
written, and how far each output file is valid. Saved atomically after the files are synced,
so a killed run resumes with exactly one result per record."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Manifest"]


@dataclass
class Manifest:
    input: str
    input_sha256: str
    model: str
    records: int
    completed: int = 0
    succeeded: int = 0
    failed: int = 0
    outputs_bytes: int = 0
    failures_bytes: int = 0
    rows_per_request: int = 0  # records a request in this run (0: not chosen yet): a resumed run keeps it

    def save(self, path: Path) -> None:
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text()))
