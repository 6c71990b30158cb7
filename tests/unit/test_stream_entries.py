"""Stream entries as records, and predictions and failures as entries (pure)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.stream.entries import RawInput, dead_fields, output_fields, parse_raw, record_of, route_of


def test_named_tensors_as_json_become_a_record_and_the_malformed_say_why() -> None:
    record = record_of(0, "1-0", {b"inputs": b'{"INPUT0": [1.0, 2.0]}', b"sensor": b"s1"}, "inputs", ())
    assert (record.custom_id, record.inputs, record.problem) == ("1-0", {"INPUT0": [1.0, 2.0]}, None)
    assert "has no field 'inputs'" in (record_of(1, "2-0", {b"x": b"1"}, "inputs", ()).problem or "")
    assert "is not JSON" in (record_of(2, "3-0", {b"inputs": b"{oops"}, "inputs", ()).problem or "")
    assert "object of named tensors" in (record_of(3, "4-0", {b"inputs": b"[1, 2]"}, "inputs", ()).problem or "")


def test_raw_inputs_are_read_as_declared_and_the_wrong_size_is_refused() -> None:
    spec = parse_raw("INPUT0:FP32:2,2")
    assert spec == RawInput("INPUT0", "FP32", (2, 2))
    data = np.arange(4, dtype="<f4").tobytes()
    record = record_of(0, "1-0", {b"INPUT0": data}, "inputs", (spec,))
    assert np.array_equal(record.inputs["INPUT0"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert "holds 8 bytes, FP32[2, 2] is 16" in (record_of(0, "1-0", {b"INPUT0": data[:8]}, "", (spec,)).problem or "")
    for bad in ("INPUT0:FP32", "INPUT0:NOPE:4", "INPUT0:BYTES:1", "INPUT0:FP32:a"):
        with pytest.raises(ValueError, match="--raw"):
            parse_raw(bad)


def test_results_go_to_the_output_the_dead_letters_or_stay_pending() -> None:
    assert route_of(True, {"outputs": {}}) == "output"
    assert route_of(False, {"code": "INVALID_ARGUMENT"}) == "dead"
    assert route_of(False, {"code": "RESOURCE_EXHAUSTED"}) == "retry"
    assert route_of(False, {"code": "UNAVAILABLE"}) == "retry"


def test_an_output_carries_the_input_id_and_the_other_fields() -> None:
    line = {"model_version": "1", "outputs": {"OUTPUT0": [[1.5, 2.5]]}}
    fields = {b"inputs": b'{"INPUT0": [1.5, 2.5]}', b"sensor": b"s1"}
    out = output_fields("7-0", fields, line, {b"inputs"})
    assert out[b"input_id"] == b"7-0" and out[b"sensor"] == b"s1" and b"inputs" not in out
    assert json.loads(out[b"outputs"]) == {"OUTPUT0": [[1.5, 2.5]]}
    raw = output_fields("7-0", fields, line, {b"inputs"}, {"OUTPUT0": "FP32"})
    assert np.frombuffer(raw[b"OUTPUT0"], "<f4").tolist() == [1.5, 2.5]
    assert (raw[b"OUTPUT0.datatype"], raw[b"OUTPUT0.shape"]) == (b"FP32", b"1,2")


def test_a_dead_letter_holds_the_status_and_the_input() -> None:
    dead = dead_fields("9-0", {b"inputs": b"{oops"}, {"code": "INVALID_ARGUMENT", "message": "not JSON"})
    assert dead == {b"input_id": b"9-0", b"code": b"INVALID_ARGUMENT", b"message": b"not JSON", b"inputs": b"{oops"}
