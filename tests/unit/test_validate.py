"""Request validation against a model signature (no sockets)."""

from __future__ import annotations

import struct

import pytest
from tritonclient.grpc import service_pb2 as pb

from gateway.errors import InvalidRequest
from gateway.signature import ModelSignature, TensorSpec
from gateway.validate import validate_infer_request

SIGNATURE = ModelSignature(
    name="m",
    inputs={
        "IMAGE": TensorSpec("IMAGE", "FP32", (-1, 2, 3)),
        "TEXT": TensorSpec("TEXT", "BYTES", (-1, 1)),
        "MASK": TensorSpec("MASK", "BOOL", (-1, 1), optional=True),
    },
    outputs=frozenset({"OUT"}),
    max_batch_size=4,
    decoupled=False,
)


def _bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _request(batch: int = 2, text: bytes | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="IMAGE", datatype="FP32", shape=[batch, 2, 3])
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[batch, 1])
    request.raw_input_contents.append(b"\0" * 4 * 6 * batch)
    request.raw_input_contents.append(text if text is not None else _bytes_tensor(*[b"ab"] * batch))
    return request


def _rejects(request: pb.ModelInferRequest, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_infer_request(request, SIGNATURE)
    assert fragment in caught.value.message
    assert caught.value.message.startswith("model 'm': ")


def test_a_well_formed_request_passes() -> None:
    validate_infer_request(_request(), SIGNATURE)


def test_optional_input_may_be_given() -> None:
    request = _request()
    request.inputs.add(name="MASK", datatype="BOOL", shape=[2, 1])
    request.raw_input_contents.append(b"\x01\x00")
    validate_infer_request(request, SIGNATURE)


def test_batch_over_max_batch_size() -> None:
    _rejects(_request(batch=5), "batch size 5 exceeds max_batch_size 4")


def test_fixed_dimension_mismatch() -> None:
    request = _request()
    request.inputs[0].shape[2] = 4
    _rejects(request, "input 'IMAGE' has shape [2, 2, 4], expected [-1, 2, 3]")


def test_negative_dimension() -> None:
    request = _request()
    request.inputs[0].shape[0] = -1
    _rejects(request, "has shape [-1, 2, 3]")


def test_raw_byte_size_mismatch() -> None:
    request = _request()
    request.raw_input_contents[0] = b"\0" * 47
    _rejects(request, "input 'IMAGE' has 47 bytes, expected 48")


def test_bytes_tensor_with_wrong_count() -> None:
    _rejects(_request(text=_bytes_tensor(b"only one")), "holds 1 strings, expected 2")


def test_bytes_tensor_with_truncated_prefix() -> None:
    _rejects(_request(text=_bytes_tensor(b"a") + b"\x05\0"), "malformed length prefixes")


def test_bytes_tensor_with_overlong_length() -> None:
    _rejects(_request(text=struct.pack("<I", 10) + b"abc" + _bytes_tensor(b"x")), "malformed length prefixes")


def test_raw_contents_count_must_match_inputs() -> None:
    request = _request()
    request.raw_input_contents.append(b"")
    _rejects(request, "3 raw_input_contents for 2 inputs")


def test_duplicate_input() -> None:
    request = _request()
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[2, 1])
    request.raw_input_contents.append(_bytes_tensor(b"a", b"b"))
    _rejects(request, "input 'TEXT' is given twice")


def test_typed_contents_are_counted() -> None:
    request = pb.ModelInferRequest(model_name="m")
    image = request.inputs.add(name="IMAGE", datatype="FP32", shape=[1, 2, 3])
    image.contents.fp32_contents.extend([0.0] * 6)
    text = request.inputs.add(name="TEXT", datatype="BYTES", shape=[1, 1])
    text.contents.bytes_contents.append(b"x")
    validate_infer_request(request, SIGNATURE)
    image.contents.fp32_contents.append(1.0)
    _rejects(request, "input 'IMAGE' has 7 values in contents.fp32_contents, expected 6")


def test_fp16_must_travel_raw() -> None:
    signature = ModelSignature("h", {"X": TensorSpec("X", "FP16", (2,))}, frozenset(), 0, False)
    request = pb.ModelInferRequest(model_name="h")
    request.inputs.add(name="X", datatype="FP16", shape=[2])
    with pytest.raises(InvalidRequest, match="must be sent in raw_input_contents"):
        validate_infer_request(request, signature)


def test_shared_memory_inputs_are_refused() -> None:
    request = _request()
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    _rejects(request, "uses shared memory")


def test_missing_required_input() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="IMAGE", datatype="FP32", shape=[1, 2, 3])
    request.raw_input_contents.append(b"\0" * 24)
    _rejects(request, "missing required input(s) ['TEXT']")


def test_unknown_output() -> None:
    request = _request()
    request.outputs.add(name="OTHER")
    _rejects(request, "unknown output 'OTHER' requested (outputs: ['OUT'])")


def test_datatype_mismatch() -> None:
    request = _request()
    request.inputs[0].datatype = "FP64"
    _rejects(request, "input 'IMAGE' has datatype FP64, expected FP32")


def test_retargeting_by_appending_fields_parses_as_the_variants_request() -> None:
    from gateway.retarget import retarget, retarget_payload
    from router import Variant

    request = _request()
    payload = request.SerializeToString()
    for variant in (Variant("v", "p", "m", "7"), Variant("v", "p", "other", "2"), Variant("v", "p", "m", "")):
        expected = pb.ModelInferRequest.FromString(retarget(request, variant))
        assert pb.ModelInferRequest.FromString(retarget_payload(payload, request, variant)) == expected
    versioned = _request()
    versioned.model_version = "3"
    cleared = retarget_payload(versioned.SerializeToString(), versioned, Variant("v", "p", "m", ""))
    assert pb.ModelInferRequest.FromString(cleared).model_version == ""
    assert retarget_payload(payload, request, Variant("v", "p", "m", "")) is payload  # nothing to change
