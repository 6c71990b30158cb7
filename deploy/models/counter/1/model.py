"""Echo INPUT0 and return COUNT, the number of requests executed by this instance so far."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.executed = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.executed += 1
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            count = np.array([self.executed], dtype=np.int64)
            outputs = [pb_utils.Tensor("OUTPUT0", data), pb_utils.Tensor("COUNT", count)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
