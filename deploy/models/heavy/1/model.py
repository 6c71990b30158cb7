"""OUTPUT0 = running sum of INPUT0 along each row, after ~5 ms (the cost of one execution)."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

COST_S = 0.005


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(COST_S)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = np.cumsum(data, axis=1, dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", out)]))
        return responses
