"""Where rollout state lives so that a restarted gateway resumes: a local JSON file (written
whole, atomically), or Redis when replicas share state. With Redis one replica leads, by a
lease it renews every tick; only the leader advances rollouts, the others read the state and
serve the weights the leader sets (through the shared route table).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.errors import UpstreamUnavailable
from gateway.rollout.machine import RolloutState

__all__ = ["FileStates", "RedisStates", "RolloutStates"]

log = logging.getLogger(__name__)


class RolloutStates(Protocol):
    owner: str

    async def lead(self) -> bool: ...
    async def load(self) -> dict[str, RolloutState]: ...
    async def save(self, state: RolloutState) -> None: ...
    async def exchange(self, snapshot: str) -> dict[str, str]: ...  # own totals out, every replica's back
    async def push(self, command: dict[str, Any]) -> None: ...
    async def take(self) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


class FileStates:
    """One gateway: it always leads. No path: state is kept in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.owner = "local"
        self._states: dict[str, RolloutState] = {}
        self._commands: list[dict[str, Any]] = []

    async def lead(self) -> bool:
        return True

    async def load(self) -> dict[str, RolloutState]:
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text() or "{}")
                self._states = {model: RolloutState.from_dict(state) for model, state in data.items()}
            except (ValueError, KeyError, TypeError) as exc:  # kept aside for a person, not lost
                aside = self.path.with_suffix(self.path.suffix + ".unreadable")
                os.replace(self.path, aside)
                log.error(
                    "rollout state in %s unreadable (%s): moved to %s, starting without it", self.path, exc, aside
                )
        return dict(self._states)

    async def save(self, state: RolloutState) -> None:
        self._states[state.spec.model] = state
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text(json.dumps({m: s.to_dict() for m, s in self._states.items()}, indent=1))
        os.replace(temporary, self.path)

    async def exchange(self, snapshot: str) -> dict[str, str]:
        return {self.owner: snapshot}

    async def push(self, command: dict[str, Any]) -> None:
        self._commands.append(command)

    async def take(self) -> list[dict[str, Any]]:
        commands, self._commands = self._commands, []
        return commands

    async def close(self) -> None:
        return None


# Renew only a lease we hold; take it when nobody holds it.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""


class RedisStates:
    def __init__(self, url: str, namespace: str, lease_s: float) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._states_key, self._lease_key = f"{namespace}rollouts", f"{namespace}rollouts:leader"
        self._commands_key = f"{namespace}rollouts:commands"
        self._lease_ms = int(lease_s * 1000)
        self.owner = uuid.uuid4().hex[:12]

    async def lead(self) -> bool:
        try:
            return bool(await self._client.eval(_LEASE, 1, self._lease_key, self.owner, self._lease_ms))
        except (RedisError, OSError) as exc:  # no Redis: nobody advances, the weights stay as they are
            log.warning("rollout lease: redis unavailable (%s); not leading", exc)
            return False

    async def leader(self) -> str:
        with contextlib.suppress(RedisError, OSError):
            holder = await self._client.get(self._lease_key)
            return holder.decode() if isinstance(holder, bytes) else str(holder or "")
        return ""

    async def load(self) -> dict[str, RolloutState]:
        try:
            rows = await self._client.hgetall(self._states_key)
        except (RedisError, OSError) as exc:
            log.warning("rollout state: redis unavailable (%s)", exc)
            return {}
        return {
            (key.decode() if isinstance(key, bytes) else key): RolloutState.from_dict(json.loads(value))
            for key, value in rows.items()
        }

    async def save(self, state: RolloutState) -> None:
        try:
            await self._client.hset(self._states_key, state.spec.model, json.dumps(state.to_dict()))
        except (RedisError, OSError) as exc:
            log.error("rollout state for %s not saved: %s", state.spec.model, exc)

    async def exchange(self, snapshot: str) -> dict[str, str]:
        """Publish this replica's totals (kept for a lease) and read every live replica's."""
        prefix = f"{self._states_key}:totals:"
        try:
            await self._client.set(prefix + self.owner, snapshot, px=self._lease_ms)
            keys = [key async for key in self._client.scan_iter(match=prefix + "*", count=500)]
            values = await self._client.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            log.warning("rollout totals not shared: redis unavailable (%s); this replica's only", exc)
            return {self.owner: snapshot}
        found = {}
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                name = key.decode() if isinstance(key, bytes) else str(key)
                found[name.removeprefix(prefix)] = value.decode() if isinstance(value, bytes) else str(value)
        return found | {self.owner: snapshot}

    async def push(self, command: dict[str, Any]) -> None:
        """A command for the leader (a follower's admin API received it)."""
        try:
            await self._client.rpush(self._commands_key, json.dumps(command))
        except (RedisError, OSError) as exc:
            raise UpstreamUnavailable(
                f"the rollout command was not handed to the leading gateway: redis: {exc}"
            ) from exc

    async def take(self) -> list[dict[str, Any]]:
        try:
            rows = await self._client.lpop(self._commands_key, 100)
        except (RedisError, OSError) as exc:
            log.warning("rollout commands: redis unavailable (%s)", exc)
            return []
        return [json.loads(row) for row in rows or [] if isinstance(row, bytes | str)]

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                1, self._lease_key, self.owner,
            )  # fmt: skip
            await self._client.aclose()
