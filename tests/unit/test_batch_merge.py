"""Records merged into one request along the batch dimension, and the answer cut back per record."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from gateway.batch.calls import CallOptions, rows_per_request, several
from gateway.batch.merge import merge, merge_key, split
from gateway.batch.records import Record


def _request(rows: np.ndarray, name: str = "INPUT0") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="1")
    request.inputs.add(name=name, datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    return request


def test_rows_of_one_key_go_as_one_request_in_their_order() -> None:
    rows = [np.full((1, 4), i, np.float32) for i in range(3)]
    requests = [_request(r) for r in rows]
    assert len({merge_key(r) for r in requests}) == 1
    assert merge_key(_request(np.zeros((1, 5)))) != merge_key(requests[0])  # another shape
    assert merge_key(_request(np.zeros((2, 4)))) is None  # a record that is a batch already
    merged = merge(requests)
    assert (merged.model_name, merged.model_version, list(merged.inputs[0].shape)) == ("m", "1", [3, 4])
    assert np.array_equal(np.frombuffer(merged.raw_input_contents[0], np.float32).reshape(3, 4), np.concatenate(rows))


def _response(outputs: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name="m", model_version="1")
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype="FP32", shape=list(array.shape))
        response.raw_output_contents.append(array.astype(np.float32).tobytes())
    return response


def test_the_answer_is_cut_back_one_row_per_record_or_not_at_all() -> None:
    logits = np.arange(30, dtype=np.float32).reshape(3, 10)
    pieces = split(_response({"LOGITS": logits, "CLASS": np.array([[1], [2], [3]])}), 3)
    assert pieces is not None and len(pieces) == 3
    assert np.array_equal(pieces[1]["LOGITS"], logits[1:2]) and pieces[2]["CLASS"].tolist() == [[3]]
    assert split(_response({"SUMMARY": np.zeros((1, 10))}), 3) is None  # not one row per record


def test_rows_per_request_follow_the_model_and_the_byte_budget() -> None:
    assert rows_per_request(None, 4 << 20, 0, 256) == 1  # no batch dimension
    assert rows_per_request(None, 4 << 20, 32, 256) == 32  # the model's max by default
    assert rows_per_request(100, 4 << 20, 32, 256) == 32  # never past the model's max
    assert rows_per_request(None, 1024, 32, 256) == 4 and rows_per_request(None, 1024, 32, 4096) == 1


class _Server:
    """A v2 server that refuses any request holding the record whose first value is -1, and
    answers the others row by row (LOGITS = the input)."""

    def __init__(self) -> None:
        self.rows_sent: list[int] = []

    async def ModelInfer(self, request: pb.ModelInferRequest, **_: object) -> pb.ModelInferResponse:
        rows = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(list(request.inputs[0].shape))
        self.rows_sent.append(len(rows))
        if (rows[:, 0] == -1).any():
            raise grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       details="a bad row", debug_error_string="")  # fmt: skip
        return _response({"LOGITS": rows})


def test_a_merged_request_that_fails_is_sent_again_record_by_record() -> None:
    options = CallOptions(model="m", max_retry_s=0)
    values = [1.0, -1.0, 3.0, 4.0]
    records = [Record(i, f"r{i}", {"INPUT0": [v, v]}) for i, v in enumerate(values)]
    server = _Server()
    results = asyncio.run(several(server, options, records, {"INPUT0": ("FP32", [-1, 2])}))
    assert server.rows_sent == [4, 1, 1, 1, 1]  # together first, then alone
    assert [(r.custom_id, ok) for r, ok, _ in results] == [("r0", True), ("r1", False), ("r2", True), ("r3", True)]
    assert results[2][2]["outputs"]["LOGITS"] == [3.0, 3.0] and results[1][2]["code"] == "INVALID_ARGUMENT"


class _Down:
    """A server that is never there."""

    def __init__(self) -> None:
        self.rows_sent: list[int] = []

    async def ModelInfer(self, request: pb.ModelInferRequest, **_: object) -> pb.ModelInferResponse:
        self.rows_sent.append(int(request.inputs[0].shape[0]))
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   details="connection refused", debug_error_string="")  # fmt: skip


def test_a_merged_request_past_its_retries_fails_its_records_without_sending_each_again() -> None:
    options = CallOptions(model="m", max_retry_s=0)
    records = [Record(i, f"r{i}", {"INPUT0": [1.0, 2.0]}) for i in range(3)]
    server = _Down()
    results = asyncio.run(several(server, options, records, {"INPUT0": ("FP32", [-1, 2])}))
    assert server.rows_sent == [3]  # one budget for the request, not one more per record
    assert [(ok, line["code"]) for _, ok, line in results] == [(False, "UNAVAILABLE")] * 3
