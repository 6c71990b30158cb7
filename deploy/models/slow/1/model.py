"""Sleep for the longest DELAY_MS of the batch, then echo each request's DELAY_MS."""

import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        delays = [pb_utils.get_input_tensor_by_name(r, "DELAY_MS").as_numpy() for r in requests]
        longest_ms = max(float(d.max()) for d in delays) if delays else 0.0
        time.sleep(max(longest_ms, 0.0) / 1000.0)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", d)]) for d in delays]
