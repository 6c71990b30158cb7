"""Rollout webhooks with Flagger's types and semantics: a POST of a JSON payload, a 2xx passes;
each call has a timeout, and the body may be signed (HMAC-SHA256 over the exact bytes sent).

The call runs on a worker thread (urllib), at control rate: a rollout calls a few hooks a step.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.rollout.spec import WebhookSpec
from gateway.webhook import post_json, secret_of

__all__ = ["HookOutcome", "call_hook"]


@dataclass(frozen=True, slots=True)
class HookOutcome:
    name: str
    kind: str
    ok: bool
    status: int  # HTTP status; 0 when no answer came
    detail: str
    elapsed_ms: float


def _post(hook: WebhookSpec, body: bytes) -> tuple[int, str]:
    return post_json(hook.url, body, hook.timeout_s, secret_of(hook.secret, hook.secret_env))


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
