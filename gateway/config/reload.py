"""Hot reload of the routes: on SIGHUP or a change of the config file.

The new file is validated whole (with the same command-line flags over it as at start); if it is
bad, the error (naming the key) is logged and the running table stays. Only what changed in the
file since it was last loaded is applied: a route the file leaves as it was keeps the weights an
admin or a rollout set since; a route changed in the file replaces the live one (audited as the
config's, naming the file); a route removed from the file goes. While a rollout owns a route, a
change to it is refused with a warning naming the rollout, and applied by the first reload after
the rollout has ended. A request already routed finishes on the route it started with. Pools,
listeners and other settings need a restart: a change to them is logged and not applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit import acting_as
from gateway.config.schema import ConfigError, GatewayConfig, load_config
from gateway.routes import RouteError, RouteStore

__all__ = ["ConfigReloader", "ConfigSource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigSource:
    """The file a gateway serves from, and how to load it as at start (the flags over it)."""

    path: Path
    load: Callable[[], GatewayConfig] | None = field(default=None, compare=False)

    def read(self) -> GatewayConfig:
        return self.load() if self.load is not None else load_config(self.path)


class ConfigReloader:
    def __init__(
        self,
        source: ConfigSource,
        config: GatewayConfig,
        store: RouteStore,
        interval_s: float = 1.0,
        on_reload: Callable[[GatewayConfig], None] | None = None,
        owner: Callable[[str], str | None] = lambda _model: None,
    ) -> None:
        """`owner(model)`: what owns the model's route now (a rollout under way), or None."""
        self._source = source
        self._path = source.path
        self._owner = owner
        self._on_reload = on_reload
        self._config = config
        self._store = store
        self._interval_s = interval_s
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self) -> bool:
        """Apply what changed in the file; False (and the old table kept) if the file is invalid."""
        last = self._config.routes
        try:
            config = self._source.read()
            changed = {model: route for model, route in config.routes.items() if last.get(model) != route}
            gone = [model for model in last if model not in config.routes]
            held = {model: owner for model in [*changed, *gone] if (owner := self._owner(model))}
            applied = [model for model in changed if model not in held]
            removed = [model for model in gone if model not in held]
            with acting_as("config", f"reload of {self._path}"):
                self._store.replace([changed[model].to_route(model) for model in applied], kind="reload")
        except (ConfigError, RouteError) as exc:
            log.error("config reload rejected, the running routes stay: %s", exc)
            return False
        for model, owner in held.items():
            log.warning("config reload: routes.%s changed in the file while %s owns it: not applied "
                        "(the first reload after it ends applies it)", model, owner)  # fmt: skip
        for model in removed:
            self._store.remove(model)
        # What the file says now, but for held routes: those stay as last loaded, so a later reload
        # still sees them as changed.
        routes = {m: r for m, r in config.routes.items() if m not in held} | {m: last[m] for m in held if m in last}
        if self._on_reload is not None:
            self._on_reload(config)
        restart = sorted(
            key
            for key in GatewayConfig.model_fields
            if key != "routes" and getattr(config, key) != getattr(self._config, key)
        )
        if restart:
            log.warning("config reload: %s changed and need a restart; only routes were applied", restart)
        self._config = config.model_copy(update={"routes": routes} | {k: getattr(self._config, k) for k in restart})
        log.info("config reloaded from %s: %d of %d routes changed and applied, %d removed", self._path, len(applied),
                 len(config.routes), len(removed))  # fmt: skip
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                self.reload()
