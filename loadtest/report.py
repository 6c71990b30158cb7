"""Results as a rich table and as JSON."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path

import psutil
from rich.table import Table

__all__ = ["hardware", "table", "write_json"]


def hardware() -> dict[str, object]:
    return {
        "cpus": psutil.cpu_count(logical=True), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "machine": platform.machine(), "python": platform.python_version(), "processor": platform.processor(),
    }  # fmt: skip


def table(title: str, rows: Sequence[dict[str, object]]) -> Table:
    result = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        result.add_column(column, justify="left" if column in ("scenario", "target") else "right")
    for row in rows:
        result.add_row(*(str(row.get(column, "")) for column in columns))
    return result


def write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hardware": hardware(), **payload}, indent=2, default=str))
