"""Input records for batch prediction: JSON lines (named tensors and an optional `custom_id`),
`.npz` (arrays by input name, the first axis the records) or Parquet (a column per input)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["Record", "RecordsError", "count", "fingerprint", "read"]


class RecordsError(ValueError):
    """The input file cannot be read as records (the message names the file and the place)."""


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    custom_id: str | None
    inputs: dict[str, Any]  # name -> array-like (one record's tensor, no batch dimension)
    line: int | None = None  # its line in a JSON-lines file
    problem: str | None = None  # why it cannot be read (then it fails alone, not the run)


def fingerprint(path: Path) -> str:
    """What identifies the input, so a resumed run refuses a different file."""
    digest = hashlib.sha256()
    with _opened(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonl(path: Path) -> Iterator[Record]:
    """Every non-blank line is a record; one that is not a JSON object is a record that fails
    (its line and why), so the others still run."""
    with _opened(path, "rb") as handle:
        index = 0
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError as exc:  # UnicodeDecodeError included
                yield Record(index, None, {}, number, f"line {number}: not JSON ({exc})")
            else:
                if isinstance(data, dict):
                    custom_id = data.pop("custom_id", None)
                    tensors = data.pop("inputs", data)
                    yield Record(index, None if custom_id is None else str(custom_id), tensors, number)
                else:
                    yield Record(index, None, {}, number, f"line {number}: expected an object of named tensors, "
                                 f"got {type(data).__name__}")  # fmt: skip
            index += 1


@contextlib.contextmanager
def _opened(path: Path, mode: str) -> Iterator[IO[bytes]]:
    try:
        handle = path.open(mode)
    except OSError as exc:
        raise RecordsError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    with handle:
        yield handle


def _npz(path: Path) -> Iterator[Record]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "custom_id"}
            ids = data["custom_id"] if "custom_id" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RecordsError(f"{path}: not a readable .npz ({exc})") from exc
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise RecordsError(f"{path}: arrays differ in their first axis ({sorted(lengths)}): it is the records")
    for index in range(lengths.pop()):
        yield Record(index, None if ids is None else str(ids[index]), {n: a[index] for n, a in arrays.items()})


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise RecordsError(f"{path}: not a readable Parquet file ({exc})") from exc
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
    """How many records; RecordsError (naming the file) when it cannot be read at all."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return len(data[data.files[0]]) if data.files else 0
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RecordsError(f"{path}: cannot be read as {suffix} ({exc})") from exc
    if suffix not in (".jsonl", ".json", ".ndjson"):
        raise RecordsError(f"{path}: expected .jsonl, .npz or .parquet")
    with _opened(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())
