"""The wire-format walk that keeps tensors out of the parser: same meaning, no copies, bad bytes refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from gateway.retarget import retarget, retarget_payload
from gateway.wire import WireError, split_tensors, tensors_suffix
from router import Variant

names = st.text(min_size=1, max_size=12)


@st.composite
def requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=draw(names), model_version=draw(st.sampled_from(["", "1", "22"])))
    request.id = draw(st.text(max_size=8))
    for name in draw(st.lists(names, max_size=3, unique=True)):
        request.parameters[name].int64_param = draw(st.integers(-(2**40), 2**40))
    for index in range(draw(st.integers(0, 4))):
        shape = draw(st.lists(st.integers(0, 300), max_size=3))
        tensor = request.inputs.add(name=f"IN{index}", datatype="FP32", shape=shape)
        tensor.parameters["binary_data_size"].int64_param = draw(st.integers(0, 2**20))
        # sizes that need 1-, 2- and 3-byte length varints
        request.raw_input_contents.append(draw(st.binary(max_size=20_000)))
    for name in draw(st.lists(names, max_size=2, unique=True)):
        request.outputs.add(name=name)
    return request


@settings(max_examples=80, deadline=None)
@given(requests())
def test_the_parsed_rest_and_the_tensor_views_are_the_whole_request(request: pb.ModelInferRequest) -> None:
    payload = request.SerializeToString()
    header, tensors = split_tensors(payload)
    rest = pb.ModelInferRequest.FromString(header)
    assert not rest.raw_input_contents
    assert [bytes(t) for t in tensors] == list(request.raw_input_contents)
    assert all(t.obj is payload for t in tensors)  # views of the caller's bytes, not copies
    rebuilt = pb.ModelInferRequest.FromString(b"".join([header, *tensors_suffix(tensors)]))
    assert rebuilt == request


def test_a_request_without_raw_tensors_is_returned_as_it_is() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="IN", datatype="INT32", shape=[2]).contents.int_contents.extend([1, 2])
    payload = request.SerializeToString()
    header, tensors = split_tensors(payload)
    assert header is payload and tensors == ()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x0a\x05abc",  # a string field promising 5 bytes, holding 3
        b"\x3a\x80",  # a tensor whose length varint is cut short
        b"\x0b\x00",  # wire type 3 (groups): never in this message
        b"\x10" + b"\xff" * 11,  # a varint longer than 64 bits
    ],
)
def test_malformed_bytes_are_refused(payload: bytes) -> None:
    with pytest.raises(WireError):
        split_tensors(payload)


def test_retargeting_a_request_held_apart_keeps_its_tensors() -> None:
    """Clearing a pinned version needs a re-serialization: the tensors kept apart come back."""
    request = pb.ModelInferRequest(model_name="public", model_version="3")
    request.inputs.add(name="IN", datatype="UINT8", shape=[3])
    request.raw_input_contents.append(b"abc")
    header, tensors = split_tensors(request.SerializeToString())
    held = pb.ModelInferRequest.FromString(header)
    cleared = pb.ModelInferRequest.FromString(retarget(held, Variant("v", "p", "upstream", ""), tensors))
    assert (cleared.model_name, cleared.model_version, list(cleared.raw_input_contents)) == ("upstream", "", [b"abc"])
    payload = request.SerializeToString()
    renamed = retarget_payload(payload, held, Variant("v", "p", "upstream", "4"), tensors)
    moved = pb.ModelInferRequest.FromString(renamed)
    assert (moved.model_name, moved.model_version, list(moved.raw_input_contents)) == ("upstream", "4", [b"abc"])
    assert retarget_payload(payload, held, Variant("v", "p", "public", "3"), tensors) is payload  # nothing to do
