"""The classifier with a bug: every third request fails (a model error, INTERNAL to the caller)."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        weights = os.path.join(args["model_repository"], "..", "classifier", "2", "weights.npz")
        with np.load(weights) as data:
            self.coef, self.intercept = data["coef"].astype(np.float32), data["intercept"].astype(np.float32)
        self.served = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.served += 1
            if self.served % 3 == 0:
                error = pb_utils.TritonError("classifier_broken: lost its weights for this request")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            pixels = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            logits = (pixels @ self.coef + self.intercept).astype(np.float32)
            classes = logits.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("LOGITS", logits), pb_utils.Tensor("CLASS", classes)]))
        return responses
