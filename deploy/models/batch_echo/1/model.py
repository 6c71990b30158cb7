"""Echo every IN_<TYPE> as OUT_<TYPE>; BATCH_SIZE: the rows of this execution, on every row.

A short sleep per execution gives concurrent callers time to pile up behind the one in flight."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

TYPES = ("FP32", "INT32", "BYTES", "BOOL", "FP16", "UINT64", "INT8")


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.01)
        responses = []
        for request in requests:
            tensors = [pb_utils.get_input_tensor_by_name(request, f"IN_{name}").as_numpy() for name in TYPES]
            rows = tensors[0].shape[0]
            outputs = [pb_utils.Tensor(f"OUT_{name}", data) for name, data in zip(TYPES, tensors)]
            outputs.append(pb_utils.Tensor("BATCH_SIZE", np.full((rows, 1), rows, dtype=np.int32)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
