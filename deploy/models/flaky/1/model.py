"""Echo INPUT0, or answer with a model error when FAIL is true."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            fail = pb_utils.get_input_tensor_by_name(request, "FAIL").as_numpy()
            if bool(fail.any()):
                error = pb_utils.TritonError("flaky: failure requested by the caller (FAIL=true)")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
