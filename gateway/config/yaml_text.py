"""YAML read with a name, so that a syntax error says where it is (`in "gateway.yaml", line 3,
column 5`), not `in "<unicode string>"`."""

from __future__ import annotations

import io
from typing import Any

import yaml

__all__ = ["load_yaml"]


def load_yaml(text: str | bytes, name: str) -> Any:
    """`yaml.safe_load` of `text`, its marks naming `name` (a file's path, or what the text is)."""
    stream = io.StringIO(text.decode() if isinstance(text, bytes) else text)
    stream.name = name  # PyYAML's reader takes the mark's name from the stream
    return yaml.safe_load(stream)
