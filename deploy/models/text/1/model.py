"""Upper-case every string of INPUT0 (UTF-8)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            strings = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            upper = np.array(
                [s.decode("utf-8", errors="replace").upper().encode("utf-8") for s in strings.reshape(-1)],
                dtype=np.object_,
            ).reshape(strings.shape)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", upper)]))
        return responses
