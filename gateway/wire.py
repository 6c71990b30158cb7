"""Just enough of protobuf's wire format to keep tensors out of the parser (pure).

A ModelInferRequest's tensors travel in `raw_input_contents` (field 7), often most of its bytes.
Parsing the whole message copies them into the parser's memory, and every read of the field
copies them again. Instead the top-level fields are walked once: the tensors stay views of the
caller's bytes, and only the rest (names, shapes, parameters: a few hundred bytes) is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["RAW_INPUT_CONTENTS", "Tensor", "WireError", "field_header", "split_tensors", "tensors_suffix"]

RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
Tensor = bytes | memoryview  # a raw tensor: the caller's bytes, not a copy


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_header(number: int, length: int) -> bytes:
    """Tag and length of a length-delimited field (what precedes its bytes)."""
    return _encode_varint(number << 3 | 2) + _encode_varint(length)


def split_tensors(message: bytes, number: int = RAW_INPUT_CONTENTS) -> tuple[bytes, tuple[memoryview, ...]]:
    """The message without field `number`, and views of that field's occurrences, in order."""
    view = memoryview(message)
    kept: list[tuple[int, int]] = []
    found: list[memoryview] = []
    position, size = 0, len(message)
    while position < size:
        start = position
        tag, position = _varint(message, position)
        wire_type = tag & 7
        if wire_type == 2:
            length, position = _varint(message, position)
            end = position + length
            if tag >> 3 == number and end <= size:
                found.append(view[position:end])
                position = end
                continue
        elif wire_type == 0:
            _, end = _varint(message, position)
        elif wire_type in (1, 5):
            end = position + (8 if wire_type == 1 else 4)
        else:
            raise WireError(f"unsupported wire type {wire_type} at byte {start}")
        if end > size:
            raise WireError(f"field {tag >> 3} runs past the end of the message")
        kept.append((start, end))
        position = end
    if not found:
        return message, ()
    return b"".join(view[start:end] for start, end in kept), tuple(found)


def tensors_suffix(tensors: Sequence[Tensor], number: int = RAW_INPUT_CONTENTS) -> list[Tensor]:
    """The pieces that, appended to a message, add `tensors` as occurrences of field `number`."""
    pieces: list[Tensor] = []
    for tensor in tensors:
        pieces += [field_header(number, len(tensor)), tensor]
    return pieces
