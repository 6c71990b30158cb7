"""A generative model with a prefix cache (see config.pbtxt)."""

import hashlib
import threading
import time
from collections import OrderedDict

import numpy as np
import triton_python_backend_utils as pb_utils

BLOCK = 16
CAPACITY = 320
BASE_S, PER_BLOCK_S, TOKEN_S = 0.001, 0.008, 0.001


def block_hashes(prompt):
    """One chained hash per whole block: a block's hash stands for the prefix up to its end."""
    hashes, chained = [], b""
    for start in range(0, len(prompt) - len(prompt) % BLOCK, BLOCK):
        chained = hashlib.blake2b(chained + prompt[start : start + BLOCK].tobytes(), digest_size=8).digest()
        hashes.append(chained)
    return hashes


class TritonPythonModel:
    def initialize(self, args):
        self._cache = OrderedDict()
        self._lock = threading.Lock()

    def _lookup(self, hashes):
        """Blocks of the prompt's prefix this instance had; all of them are its now."""
        with self._lock:
            cached = 0
            for digest in hashes:
                if digest not in self._cache:
                    break
                cached += 1
            for digest in hashes:
                self._cache[digest] = True
                self._cache.move_to_end(digest)
            while len(self._cache) > CAPACITY:
                self._cache.popitem(last=False)
        return cached

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._generate, args=(request,), daemon=True).start()
        return None

    def _generate(self, request):
        sender = request.get_response_sender()
        prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1).astype(np.int32)
        count = pb_utils.get_input_tensor_by_name(request, "N")
        count = 4 if count is None else int(count.as_numpy().reshape(-1)[0])
        hashes = block_hashes(prompt)
        cached = self._lookup(hashes)
        time.sleep(BASE_S + PER_BLOCK_S * (len(hashes) - cached))
        hits = pb_utils.Tensor("CACHED", np.array([cached], dtype=np.int32))
        for index in range(count):
            if request.is_cancelled():
                break
            if index:
                time.sleep(TOKEN_S)
            token = pb_utils.Tensor("TOKEN", np.array([index], dtype=np.int32))
            sender.send(pb_utils.InferenceResponse([token, hits]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
