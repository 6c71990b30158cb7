"""What a person asks for when starting a rollout (`gatewayctl rollout start`), validated once."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, field_serializer, field_validator, model_validator

from gateway.rollout.gates import GateSettings

__all__ = ["HOOK_KINDS", "KEEP_SECRETS", "REDACTED", "RolloutSpec", "WebhookSpec"]

REDACTED = "***"
# The serialization context under which a spec keeps its secrets: only where the gateway itself must
# read the spec back (its saved state, a follower's command to the leader), never where it is shown.
KEEP_SECRETS = {"secrets": "keep"}

# Flagger's webhook types, with its semantics: a 2xx passes.
HookKind = Literal[
    "confirm-rollout", "pre-rollout", "rollout", "confirm-promotion", "post-rollout", "rollback", "event"
]
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    type: HookKind
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Signs the body: header `X-Gateway-Signature: sha256=<hex HMAC-SHA256>`. `secret_env` names an
    # environment variable holding it, so the file need not.
    # Shown and audited as "***" (and never in a repr); kept only under KEEP_SECRETS.
    secret: str | None = Field(default=None, repr=False)
    secret_env: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)  # passed through in the payload

    @field_serializer("secret")
    def _redacted(self, secret: str | None, info: SerializationInfo) -> str | None:
        if secret is None or (info.context or {}).get("secrets") == "keep":
            return secret
        return REDACTED


class RolloutSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    baseline: str = Field(min_length=1)
    shadow_requests: int = Field(default=0, ge=0)  # paired answers needed in the shadow phase; 0: none
    shadow_fraction: float = Field(default=1.0, gt=0, le=1)
    steps: tuple[int, ...] = (5, 25, 50)  # the candidate's percentage at each canary step
    interval_s: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=300, ge=1)  # per variant and window, else inconclusive
    failure_limit: int = Field(default=1, ge=0)  # failed windows tolerated; one more rolls back
    max_extensions: int = Field(default=3, ge=0)  # inconclusive windows extended before pausing
    gates: GateSettings = Field(default_factory=GateSettings)
    webhooks: tuple[WebhookSpec, ...] = ()

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("give at least one step, e.g. 5,25,50")
        if any(not 1 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            raise ValueError("steps are percentages 1..100, strictly increasing")  # the value is shown beside
        return steps

    @model_validator(mode="after")
    def _two_variants(self) -> RolloutSpec:
        if self.candidate == self.baseline:
            raise ValueError(f"the candidate and the baseline are the same variant ({self.candidate!r})")
        return self

    def hooks(self, kind: str) -> list[WebhookSpec]:
        return [hook for hook in self.webhooks if hook.type == kind]
