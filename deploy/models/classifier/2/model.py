"""Softmax regression over 64 digit pixels; weights from weights.npz beside this file."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        weights = np.load(os.path.join(version_dir, "weights.npz"))
        self.coef = weights["coef"].astype(np.float32)  # [64, 10]
        self.intercept = weights["intercept"].astype(np.float32)  # [10]

    def execute(self, requests):
        responses = []
        for request in requests:
            pixels = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            logits = (pixels @ self.coef + self.intercept).astype(np.float32)
            classes = logits.argmax(axis=1).astype(np.int64).reshape(-1, 1)
            outputs = [pb_utils.Tensor("LOGITS", logits), pb_utils.Tensor("CLASS", classes)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
