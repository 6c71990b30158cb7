"""POSTing JSON to a webhook: a timeout, an optional HMAC-SHA256 signature over the exact bytes
sent, the status and the start of the answer back. Blocking (urllib): callers run it on a
worker thread, at control rate."""

from __future__ import annotations

import hashlib
import hmac
import os
import urllib.error
import urllib.request

__all__ = ["SIGNATURE_HEADER", "post_json", "secret_of", "sign"]

SIGNATURE_HEADER = "X-Gateway-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secret_of(secret: str | None, secret_env: str | None) -> str | None:
    return secret or (os.environ.get(secret_env) if secret_env else None)


def post_json(url: str, body: bytes, timeout_s: float, secret: str | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, str]:  # fmt: skip
    """(HTTP status, the answer's first 200 characters); status 0 when no answer came."""
    sent = {"Content-Type": "application/json", "User-Agent": "triton-gateway"} | (headers or {})
    if secret:
        sent[SIGNATURE_HEADER] = sign(secret, body)
    request = urllib.request.Request(url, data=body, headers=sent, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # http(s) only, checked by the config
            return answer.status, answer.read(200).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, f"no answer: {getattr(exc, 'reason', exc)}"
