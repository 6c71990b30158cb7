"""Micro-batching's pure core: which requests merge, how rows are joined and cut back, when to send."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import serialize_byte_tensor

from batching import BatchQueue, MergeError, merge, merge_key, rows, split
from gateway.batcher import Batchers
from gateway.config import ConfigError, parse_config
from gateway.signature import ModelSignature
from gateway.wire import split_tensors

NUMPY_TYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return bytes(serialize_byte_tensor(array).item())
    if datatype == "BF16":  # numpy has no bfloat16: the upper half of each FP32
        return (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return array.tobytes()


def _array(datatype: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":  # strings of different lengths, empty ones included
        lengths = rng.integers(0, 9, int(np.prod(shape)))
        flat = [bytes(rng.integers(0, 256, int(n)).astype(np.uint8)) for n in lengths]
        return np.array(flat, dtype=np.object_).reshape(shape)
    if datatype == "BF16":
        return rng.normal(size=shape).astype(np.float32)
    return (rng.normal(size=shape) * 100).astype(NUMPY_TYPES[datatype])


def _request(datatype: str, batch: int, seed: int, row: tuple[int, ...] = (3,), rid: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id=rid)
    array = _array(datatype, (batch, *row), seed)
    request.inputs.add(name="IN", datatype=datatype, shape=[batch, *row])
    request.raw_input_contents.append(_raw(array, datatype))
    request.outputs.add(name="OUT")
    return request


def _apart(request: pb.ModelInferRequest) -> tuple[pb.ModelInferRequest, tuple[memoryview, ...]]:
    """As the gateway holds a request: parsed without its tensors, which stay views of the bytes."""
    header, tensors = split_tensors(request.SerializeToString())
    return pb.ModelInferRequest.FromString(header), tensors


def _key(request: pb.ModelInferRequest) -> Hashable | None:
    return merge_key(*_apart(request))


def _merge(requests: list[pb.ModelInferRequest]) -> pb.ModelInferRequest:
    held = [_apart(request) for request in requests]
    return merge([header for header, _ in held], [tensors for _, tensors in held])


def _echo(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """What an identity model answers: each input back as an output, row for row."""
    response = pb.ModelInferResponse(model_name="m", model_version="1")
    for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
        response.outputs.add(name="OUT", datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(raw)
    return response


@pytest.mark.parametrize("datatype", [*NUMPY_TYPES, "BF16", "BYTES"])
def test_every_datatype_merges_and_each_caller_gets_exactly_its_rows(datatype: str) -> None:
    """Rows join in arrival order and come back to their callers byte for byte, ids kept."""
    callers = [_request(datatype, batch, seed, rid=f"r{seed}") for seed, batch in enumerate((1, 3, 2, 1))]
    assert len({_key(c) for c in callers}) == 1
    merged = _merge(callers)
    assert list(merged.inputs[0].shape) == [7, 3]
    assert merged.raw_input_contents[0] == b"".join(c.raw_input_contents[0] for c in callers)
    answers = split(_echo(merged), callers)
    for caller, answer in zip(callers, answers, strict=True):
        assert answer.id == caller.id
        assert list(answer.outputs[0].shape) == list(caller.inputs[0].shape)
        assert answer.outputs[0].datatype == datatype
        assert answer.raw_output_contents[0] == caller.raw_input_contents[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=20), min_size=2, max_size=2), min_size=1, max_size=6), st.data())
def test_bytes_rows_are_cut_at_the_right_length_prefix(all_rows: list[list[bytes]], data: st.DataObject) -> None:
    """Whatever the strings' lengths (empty, long, ones that look like prefixes), each caller gets its own."""
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(all_rows) - 1), max_size=3)))) if len(all_rows) > 1 else []
    groups = [all_rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(all_rows)], strict=True)]
    callers = []
    for group in groups:
        request = pb.ModelInferRequest(model_name="m")
        request.inputs.add(name="IN", datatype="BYTES", shape=[len(group), 2])
        request.raw_input_contents.append(_raw(np.array(group, dtype=np.object_), "BYTES"))
        callers.append(request)
    answers = split(_echo(_merge(callers)), callers)
    assert [a.raw_output_contents[0] for a in answers] == [c.raw_input_contents[0] for c in callers]


def test_outputs_of_another_row_size_are_cut_by_the_output_shape() -> None:
    """A model answering 2 values per row for inputs of 3 per row: cut by the output's own size."""
    callers = [_request("FP32", batch, seed) for seed, batch in enumerate((2, 1))]
    response = pb.ModelInferResponse(model_name="m")
    response.outputs.add(name="OUT", datatype="INT64", shape=[3, 2])
    response.raw_output_contents.append(np.arange(6, dtype=np.int64).tobytes())
    first, second = split(response, callers)
    assert np.frombuffer(first.raw_output_contents[0], np.int64).tolist() == [0, 1, 2, 3]
    assert list(second.outputs[0].shape) == [1, 2]
    assert np.frombuffer(second.raw_output_contents[0], np.int64).tolist() == [4, 5]


def test_inputs_given_in_another_order_still_merge_by_name() -> None:
    a = pb.ModelInferRequest(model_name="m")
    b = pb.ModelInferRequest(model_name="m")
    for request, order, fill in ((a, ("X", "Y"), b"a"), (b, ("Y", "X"), b"b")):
        for name in order:
            request.inputs.add(name=name, datatype="UINT8", shape=[1, 2])
            request.raw_input_contents.append(fill + name.encode())
    assert _key(a) == _key(b)
    merged = _merge([a, b])
    assert [t.name for t in merged.inputs] == ["X", "Y"]
    assert list(merged.raw_input_contents) == [b"aXbX", b"aYbY"]


def _variant(change: str) -> pb.ModelInferRequest:
    request = _request("FP32", 1, 0)
    if change == "row shape":
        request.inputs[0].shape[1] = 4
    elif change == "datatype":
        request.inputs[0].datatype = "INT32"
    elif change == "request parameter":
        request.parameters["temperature"].double_param = 0.5
    elif change == "input parameter":
        request.inputs[0].parameters["binary_data_size"].int64_param = 12
    elif change == "outputs":
        request.outputs.add(name="OTHER")
    elif change == "output parameter":
        request.outputs[0].parameters["classification"].int64_param = 3
    elif change == "version":
        request.model_version = "2"
    return request


@pytest.mark.parametrize(
    "change",
    ["row shape", "datatype", "request parameter", "input parameter", "outputs", "output parameter", "version"],
)
def test_requests_that_differ_in_meaning_do_not_merge(change: str) -> None:
    assert _key(_variant(change)) != _key(_request("FP32", 1, 0))


def test_requests_that_cannot_be_merged_at_all_go_alone() -> None:
    """Typed contents, sequence requests, unequal batch sizes among inputs, no batch dimension."""
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="IN", datatype="FP32", shape=[1, 3]).contents.fp32_contents.extend([1, 2, 3])
    sequence = _request("FP32", 1, 0)
    sequence.parameters["sequence_id"].int64_param = 7
    uneven = _request("FP32", 2, 0)
    uneven.inputs.add(name="IN2", datatype="FP32", shape=[3, 3])
    uneven.raw_input_contents.append(bytes(36))
    scalar = pb.ModelInferRequest(model_name="m")
    scalar.inputs.add(name="IN", datatype="FP32", shape=[])
    scalar.raw_input_contents.append(bytes(4))
    for request in (typed, sequence, uneven, scalar):
        assert _key(request) is None
    assert rows(uneven) is None


def test_an_answer_with_the_wrong_row_count_is_an_error_not_a_wrong_slice() -> None:
    callers = [_request("FP32", 1, 0), _request("FP32", 2, 1)]
    response = _echo(_merge(callers))
    response.outputs[0].shape[0] = 2
    with pytest.raises(MergeError, match="expected 3 rows"):
        split(response, callers)
    truncated = _echo(_merge([_request("BYTES", 1, 0), _request("BYTES", 1, 1)]))
    truncated.raw_output_contents[0] = truncated.raw_output_contents[0][:3]
    with pytest.raises(MergeError, match="length prefix"):
        split(truncated, [_request("BYTES", 1, 0), _request("BYTES", 1, 1)])


def _always(_: str) -> bool:
    return True


def test_first_caller_goes_at_once_the_next_ones_wait_for_the_call_in_flight() -> None:
    queue: BatchQueue[str] = BatchQueue(max_rows=8)
    queue.add("a", 1, None)
    batch, _ = queue.take(0.0, _always)
    assert [p.item for p in batch] == ["a"] and queue.inflight == 1
    for name in "bcd":
        queue.add(name, 1, None)
    assert not queue.ready()  # one merged call at a time
    queue.done()
    batch, _ = queue.take(0.0, _always)
    assert [p.item for p in batch] == ["b", "c", "d"]


def test_a_batch_holds_at_most_max_rows_and_keeps_arrival_order() -> None:
    queue: BatchQueue[str] = BatchQueue(max_rows=4)
    for name, size in (("a", 2), ("b", 1), ("c", 2), ("d", 1)):
        queue.add(name, size, None)
    batch, _ = queue.take(0.0, _always)
    assert [p.item for p in batch] == ["a", "b"]  # c would make 5 rows: it waits, d does not jump it
    queue.done()
    assert [p.item for p in queue.take(0.0, _always)[0]] == ["c", "d"]


def test_expired_callers_are_dropped_and_callers_who_left_vanish() -> None:
    queue: BatchQueue[str] = BatchQueue(max_rows=8, max_inflight=2)
    queue.add("late", 1, deadline=1.0)
    queue.add("gone", 1, deadline=None)
    queue.add("fine", 1, deadline=5.0)
    batch, expired = queue.take(2.0, lambda item: item != "gone")
    assert [p.item for p in batch] == ["fine"]
    assert [p.item for p in expired] == ["late"]
    assert len(queue) == 0 and queue.ready() is False


def test_nothing_alive_means_no_batch_and_nothing_in_flight() -> None:
    queue: BatchQueue[str] = BatchQueue(max_rows=8)
    queue.add("gone", 1, None)
    assert queue.take(0.0, lambda _: False) == ([], [])
    assert queue.inflight == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rows"):
        BatchQueue[str](max_rows=0)


def test_batching_is_configured_per_route() -> None:
    """A route's own `batching` section wins over the top-level default, and bad values are named."""
    config = parse_config(
        {
            "pools": {"p": {"endpoints": ["127.0.0.1:1"]}},
            "batching": {"enabled": False, "max_batch_size": 8},
            "routes": {
                "m": {"variants": [{"name": "a", "pool": "p", "weight": 1}], "batching": {"max_batch_size": 64}}
            },
        }
    )
    batchers = Batchers(config)
    signature = ModelSignature("m", {}, frozenset(), max_batch_size=32, decoupled=False)
    settings = batchers.settings("m", signature)
    assert settings is not None and settings.max_batch_size == 32  # the model's own cap
    assert batchers.settings("other", signature) is None  # off by default
    assert batchers.settings("m", ModelSignature("m", {}, frozenset(), 0, False)) is None  # model does not batch
    with pytest.raises(ConfigError, match=r"batching\.max_inflight"):
        parse_config({"pools": {"p": {"endpoints": ["127.0.0.1:1"]}}, "batching": {"max_inflight": 0}})
