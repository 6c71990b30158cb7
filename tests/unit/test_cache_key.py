"""Cache keys: what must and must not change them (property-based)."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from cache import cache_key

DTYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "FP64": np.float64}
TYPED_FIELD = {"FP32": "fp32_contents", "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
               "FP64": "fp64_contents"}  # fmt: skip

tensors = st.sampled_from(sorted(DTYPES)).flatmap(
    lambda datatype: st.tuples(
        st.just(datatype),
        st.lists(st.integers(min_value=0 if datatype == "UINT8" else -1000, max_value=255), min_size=1, max_size=12),
    )
)
requests = st.dictionaries(st.text(alphabet="ABCDEFGH_", min_size=1, max_size=6), tensors, min_size=1, max_size=4)


def _raw(inputs: dict[str, tuple[str, list[int]]], order: list[str] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for name in order or list(inputs):
        datatype, values = inputs[name]
        array = np.array(values, dtype=DTYPES[datatype])
        request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        request.raw_input_contents.append(array.tobytes())
    return request


def _typed(inputs: dict[str, tuple[str, list[int]]]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for name, (datatype, values) in inputs.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        getattr(tensor.contents, TYPED_FIELD[datatype]).extend(
            [float(v) for v in values]
            if datatype.startswith("FP")
            else [v % 256 if datatype == "UINT8" else v for v in values]
        )
    return request


def _key(request: pb.ModelInferRequest, version: str = "1") -> bytes:
    return cache_key(request, "m", version)


@given(requests)
def test_raw_and_typed_contents_give_the_same_key(inputs: dict[str, tuple[str, list[int]]]) -> None:
    assert _key(_raw(inputs)) == _key(_typed(inputs))


@given(requests, st.randoms())
def test_input_order_does_not_matter(inputs: dict[str, tuple[str, list[int]]], rng: object) -> None:
    order = list(inputs)
    rng.shuffle(order)  # type: ignore[attr-defined]
    assert _key(_raw(inputs)) == _key(_raw(inputs, order))


@settings(max_examples=60)
@given(requests, st.data())
def test_any_change_changes_the_key(inputs: dict[str, tuple[str, list[int]]], data: st.DataObject) -> None:
    base = _raw(inputs)
    original = _key(base)
    name = data.draw(st.sampled_from(sorted(inputs)))
    index = [t.name for t in base.inputs].index(name)
    change = data.draw(st.sampled_from(["shape", "dtype", "contents", "parameter", "version", "output", "model"]))
    changed = pb.ModelInferRequest()
    changed.CopyFrom(base)
    tensor = changed.inputs[index]
    version = "1"
    if change == "shape":
        tensor.shape.insert(0, 1)
    elif change == "dtype":
        tensor.datatype = "UINT64" if tensor.datatype != "UINT64" else "INT64"
    elif change == "contents":
        raw = bytearray(changed.raw_input_contents[index])
        raw[0] ^= 0xFF
        changed.raw_input_contents[index] = bytes(raw)
    elif change == "parameter":
        changed.parameters["temperature"].double_param = data.draw(st.floats(allow_nan=False))
    elif change == "version":
        version = "2"
    elif change == "output":
        changed.outputs.add(name="OUT")
    else:
        assert cache_key(changed, "other", version) != original
        return
    assert _key(changed, version) != original


def test_ignored_parameters_and_request_id_leave_the_key_alone() -> None:
    request = _raw({"A": ("FP32", [1, 2])})
    original = _key(request)
    request.id = "abc"
    request.parameters["priority"].uint64_param = 3
    request.parameters["timeout"].int64_param = 1000
    request.parameters["traceparent"].string_param = "00-abc-def-01"
    assert _key(request) == original


def test_output_parameters_count() -> None:
    request = _raw({"A": ("FP32", [1, 2])})
    request.outputs.add(name="OUT")
    plain = _key(request)
    request.outputs[0].parameters["classification"].int64_param = 3
    assert _key(request) != plain


def test_bytes_typed_matches_raw() -> None:
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="T", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"ab", b""])
    raw = pb.ModelInferRequest(model_name="m")
    raw.inputs.add(name="T", datatype="BYTES", shape=[2])
    raw.raw_input_contents.append(struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0))
    assert _key(typed) == _key(raw)


def test_keys_are_128_bits() -> None:
    assert len(_key(_raw({"A": ("FP32", [1])}))) == 16


def test_the_key_of_a_fixed_request_does_not_change_between_releases() -> None:
    """Replicas of different releases share Redis during a rolling upgrade: a release that hashed
    differently would miss every entry the others stored. Changing this value is a format change."""
    request = pb.ModelInferRequest(model_name="identity", id="ignored")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    tensor.parameters["p"].string_param = "v"
    request.inputs.add(name="A", datatype="BYTES", shape=[2])
    request.raw_input_contents.extend([bytes(range(16)), b"\x01\x00\x00\x00a\x00\x00\x00\x00"])
    output = request.outputs.add(name="OUTPUT0")
    output.parameters["classification"].int64_param = 2
    request.parameters["priority"].int64_param = 1
    request.parameters["custom"].bool_param = True
    assert cache_key(request, "identity", "1").hex() == "f594c56cfb0918279029f23ae717d2cd"
