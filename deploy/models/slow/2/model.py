"""Sleep for the longest DELAY_MS of the batch, then echo each request's DELAY_MS.

Version 1 is "an older, slower build": it adds 200 ms to every batch. Version 2 (the default for
unversioned requests, being the latest) sleeps exactly DELAY_MS. Shadowing v1 behind v2 shows
that a slow shadow never delays the primary.
"""

import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.extra_ms = 200.0 if args["model_version"] == "1" else 0.0

    def execute(self, requests):
        delays = [pb_utils.get_input_tensor_by_name(r, "DELAY_MS").as_numpy() for r in requests]
        longest_ms = max(float(d.max()) for d in delays) if delays else 0.0
        time.sleep((max(longest_ms, 0.0) + self.extra_ms) / 1000.0)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", d)]) for d in delays]
