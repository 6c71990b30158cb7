"""Rollout webhooks with Flagger's types and semantics: a POST of a JSON payload, a 2xx passes;
each call has a timeout, and the body may be signed (HMAC-SHA256 over the exact bytes sent).

The call runs on a worker thread (urllib), at control rate: a rollout calls a few hooks a step.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.rollout.spec import WebhookSpec

__all__ = ["SIGNATURE_HEADER", "HookOutcome", "call_hook", "sign"]

SIGNATURE_HEADER = "X-Gateway-Signature"


@dataclass(frozen=True, slots=True)
class HookOutcome:
    name: str
    kind: str
    ok: bool
    status: int  # HTTP status; 0 when no answer came
    detail: str
    elapsed_ms: float


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(hook: WebhookSpec, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "triton-gateway-rollouts"}
    secret = hook.secret or (os.environ.get(hook.secret_env) if hook.secret_env else None)
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout_s) as answer:  # http(s) only, checked
            return answer.status, answer.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return 0, f"no answer: {reason}"


async def call_hook(hook: WebhookSpec, payload: Mapping[str, Any]) -> HookOutcome:
    body = json.dumps({**payload, "name": hook.name, "type": hook.type, "metadata": hook.metadata},
                      sort_keys=True).encode()  # fmt: skip
    started = time.perf_counter()
    status, text = await asyncio.to_thread(_post, hook, body)
    ok = 200 <= status < 300
    detail = f"{hook.name}: HTTP {status}" if status else f"{hook.name}: {text}"
    if not ok and status and text.strip():
        detail += f" ({text.strip()[:120]})"
    return HookOutcome(hook.name, hook.type, ok, status, detail, (time.perf_counter() - started) * 1000)
