"""Input records for batch prediction: JSON lines (named tensors and an optional `custom_id`),
`.npz` (arrays by input name, the first axis the records) or Parquet (a column per input)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Record", "RecordsError", "count", "fingerprint", "read"]


class RecordsError(ValueError):
    """The input file cannot be read as records (the message names the file and the place)."""


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    custom_id: str | None
    inputs: dict[str, Any]  # name -> array-like (one record's tensor, no batch dimension)


def fingerprint(path: Path) -> str:
    """What identifies the input, so a resumed run refuses a different file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonl(path: Path) -> Iterator[Record]:
    with path.open() as handle:
        index = 0
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise RecordsError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(data, dict):
                raise RecordsError(f"{path}:{number}: expected an object of named tensors")
            custom_id = data.pop("custom_id", None)
            tensors = data.pop("inputs", data)
            yield Record(index, None if custom_id is None else str(custom_id), tensors)
            index += 1


def _npz(path: Path) -> Iterator[Record]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if name != "custom_id"}
        ids = data["custom_id"] if "custom_id" in data.files else None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise RecordsError(f"{path}: arrays differ in their first axis ({sorted(lengths)}): it is the records")
    for index in range(lengths.pop()):
        yield Record(index, None if ids is None else str(ids[index]), {n: a[index] for n, a in arrays.items()})


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [n for n in table.column_names if n != "custom_id"]
    ids = table.column("custom_id").to_pylist() if "custom_id" in table.column_names else None
    for batch_start, batch in _batches(table):
        columns = {n: batch.column(n).to_pylist() for n in names}
        for offset in range(batch.num_rows):
            index = batch_start + offset
            yield Record(index, None if ids is None else str(ids[index]), {n: columns[n][offset] for n in names})


def _batches(table: Any) -> Iterator[tuple[int, Any]]:
    start = 0
    for batch in table.to_batches(max_chunksize=4096):
        yield start, batch
        start += batch.num_rows


def read(path: Path) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return _jsonl(path)
    if suffix == ".npz":
        return _npz(path)
    if suffix in (".parquet", ".pq"):
        return _parquet(path)
    raise RecordsError(f"{path}: expected .jsonl, .npz or .parquet")


def count(path: Path) -> int:
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return len(data[data.files[0]]) if data.files else 0
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open() as handle:
        return sum(1 for line in handle if line.strip())
