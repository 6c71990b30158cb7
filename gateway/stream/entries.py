"""Stream entries as records and predictions as entries (pure).

Input formats: named tensors as JSON in one field (`inputs` by default: `{"INPUT0": [1.0, 2.0]}`,
as `gateway batch` reads a JSON line), or raw little-endian bytes, one field per input, with the
datatype and shape declared on the command line (`INPUT0:FP32:16`). The other fields of an entry
are carried over to its output. An output entry holds `input_id` (the entry it answers),
`model_version` and the outputs: JSON in one field (`outputs`), or raw, a field per output with
`NAME.datatype` and `NAME.shape` beside it. A dead-letter entry holds `input_id`, `code`,
`message` and the input's own fields."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from gateway.batch.calls import RETRIED
from gateway.batch.records import Record

__all__ = ["RawInput", "Route", "dead_fields", "output_fields", "parse_raw", "record_of", "route_of", "text_of"]

Fields = dict[bytes, bytes]
Route = Literal["output", "dead", "retry"]


@dataclass(frozen=True, slots=True)
class RawInput:
    """An input sent as raw bytes in a field of its own name."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def parse_raw(text: str) -> RawInput:
    """`NAME:DATATYPE:DIM,DIM` (e.g. `INPUT0:FP32:16`), as `--raw` takes it."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0] or triton_to_np_dtype(parts[1]) is None or parts[1] == "BYTES":
        raise ValueError(f"--raw {text!r}: expected NAME:DATATYPE:SHAPE, a fixed-size datatype (INPUT0:FP32:16)")
    try:
        shape = tuple(int(d) for d in parts[2].split(",") if d)
    except ValueError:
        raise ValueError(f"--raw {text!r}: the shape is comma-separated integers, e.g. 3,224,224") from None
    return RawInput(parts[0], parts[1], shape)


def _text(value: bytes) -> str:
    return value.decode(errors="replace")


def record_of(index: int, entry_id: str, fields: Fields, field: str, raw: tuple[RawInput, ...]) -> Record:
    """The entry as a record (`custom_id` its id); a malformed one is a record with its problem."""
    if raw:
        inputs: dict[str, Any] = {}
        for spec in raw:
            data = fields.get(spec.name.encode())
            if data is None:
                return Record(index, entry_id, {}, problem=f"entry {entry_id} has no field {spec.name!r}")
            dtype = np.dtype(triton_to_np_dtype(spec.datatype)).newbyteorder("<")
            expected = int(np.prod(spec.shape)) * dtype.itemsize
            if len(data) != expected:
                return Record(index, entry_id, {}, problem=f"entry {entry_id}: field {spec.name!r} holds {len(data)} "
                              f"bytes, {spec.datatype}{list(spec.shape)} is {expected}")  # fmt: skip
            inputs[spec.name] = np.frombuffer(data, dtype).reshape(spec.shape)
        return Record(index, entry_id, inputs)
    text = fields.get(field.encode())
    if text is None:
        return Record(index, entry_id, {}, problem=f"entry {entry_id} has no field {field!r}")
    try:
        tensors = json.loads(text)
    except ValueError as exc:
        return Record(index, entry_id, {}, problem=f"entry {entry_id}: field {field!r} is not JSON ({exc})")
    if not isinstance(tensors, dict) or not tensors:
        return Record(index, entry_id, {}, problem=f"entry {entry_id}: field {field!r} must hold an object of "
                      "named tensors, e.g. {\"INPUT0\": [1.0, 2.0]}")  # fmt: skip
    return Record(index, entry_id, tensors)


def route_of(ok: bool, line: dict[str, Any]) -> Route:
    """Where a result goes: its output, the dead-letter stream (failed for good), or nowhere yet
    (failed in a way a later try may not: left pending, to be claimed again)."""
    if ok:
        return "output"
    return "retry" if line.get("code") in {code.name for code in RETRIED} else "dead"


def _carried(fields: Fields, own: set[bytes]) -> Fields:
    return {key: value for key, value in fields.items() if key not in own}


def output_fields(entry_id: str, fields: Fields, line: dict[str, Any], inputs: set[bytes],
                  datatypes: dict[str, str] | None = None) -> Fields:  # fmt: skip
    """The prediction's entry: `input_id`, `model_version`, the outputs (JSON; raw bytes when the
    outputs' `datatypes` are given), and the input's other fields."""
    out: Fields = {b"input_id": entry_id.encode(), b"model_version": str(line.get("model_version", "")).encode()}
    outputs: dict[str, Any] = line["outputs"]
    if datatypes is None:
        out[b"outputs"] = json.dumps(outputs, separators=(",", ":")).encode()
    else:
        for name, value in outputs.items():
            datatype = datatypes.get(name, "BYTES")
            if datatype == "BYTES":  # strings stay JSON
                array = np.asarray(value, dtype=object)
                out[name.encode()] = json.dumps(value).encode()
            else:
                array = np.asarray(value, dtype=np.dtype(triton_to_np_dtype(datatype)).newbyteorder("<"))
                out[name.encode()] = array.tobytes()
            out[f"{name}.datatype".encode()] = datatype.encode()
            out[f"{name}.shape".encode()] = ",".join(str(d) for d in array.shape).encode()
    return out | _carried(fields, inputs | set(out))


def dead_fields(entry_id: str, fields: Fields, line: dict[str, Any]) -> Fields:
    """A failed entry's dead letter: its id, status and message, and its own fields."""
    out: Fields = {b"input_id": entry_id.encode(), b"code": str(line.get("code", "UNKNOWN")).encode(),
                   b"message": str(line.get("message", "")).encode()}  # fmt: skip
    return out | _carried(fields, set(out))


def text_of(fields: Fields) -> dict[str, str]:
    """Fields as text, for a person reading them."""
    return {_text(k): _text(v) for k, v in fields.items()}
