"""Decoupled token generator that honours cancellation (see config.pbtxt). Versions 2 and 3 are
this file: version 2 is slow to its first token (80 ms more), version 3 as fast as version 1."""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _input(request, name, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return default if tensor is None else int(tensor.as_numpy().reshape(-1)[0])


def _log(path, line):
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{line} {time.time():.6f}\n")


class TritonPythonModel:
    def initialize(self, args):
        self._first_delay = 0.08 if args["model_version"] == "2" else 0.0
        self._threads = set()
        self._lock = threading.Lock()

    def execute(self, requests):
        for request in requests:
            thread = threading.Thread(target=self._generate, args=(request,), daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()
        return None

    def _generate(self, request):
        sender = request.get_response_sender()
        try:
            count, delay = _input(request, "N", 0), _input(request, "DELAY_MS", 0) / 1000.0
            path = json.loads(request.parameters() or "{}").get("log")
            if self._first_delay:
                time.sleep(self._first_delay)
            for index in range(max(count, 0)):
                if request.is_cancelled():
                    _log(path, f"cancelled {index}")
                    sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                        "cancelled", pb_utils.TritonError.CANCELLED)), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                    return
                if delay:
                    time.sleep(delay)
                token = pb_utils.Tensor("TOKEN", np.array([index], dtype=np.int32))
                sender.send(pb_utils.InferenceResponse([token]))
                _log(path, f"token {index}")
            _log(path, "done")
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def finalize(self):
        for thread in list(self._threads):
            thread.join(timeout=5)
