"""Hot reload of the routes: on SIGHUP or a change of the config file.

The new file is validated whole; if it is bad, the error (naming the key) is logged and the
running table stays. Routes are swapped atomically; a request already routed finishes on the
route it started with. Pools, listeners and other settings need a restart: a change to them is
logged and not applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.config.schema import ConfigError, GatewayConfig, load_config
from gateway.routes import RouteError, RouteStore

__all__ = ["ConfigReloader"]

log = logging.getLogger(__name__)


class ConfigReloader:
    def __init__(
        self,
        path: Path,
        config: GatewayConfig,
        store: RouteStore,
        interval_s: float = 1.0,
        on_reload: Callable[[GatewayConfig], None] | None = None,
    ) -> None:
        self._path = path
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
        """Apply the file's routes now; False (and the old table kept) if the file is invalid."""
        try:
            config = load_config(self._path)
            routes = [route.to_route(model) for model, route in config.routes.items()]
            self._store.replace(routes, kind="reload")
        except (ConfigError, RouteError) as exc:
            log.error("config reload rejected, the running routes stay: %s", exc)
            return False
        for model in set(self._config.routes) - set(config.routes):
            self._store.remove(model)
        if self._on_reload is not None:
            self._on_reload(config)
        changed = sorted(
            key
            for key in GatewayConfig.model_fields
            if key != "routes" and getattr(config, key) != getattr(self._config, key)
        )
        if changed:
            log.warning("config reload: %s changed and need a restart; only routes were applied", changed)
        self._config = config.model_copy(update={key: getattr(self._config, key) for key in changed})
        log.info("config reloaded from %s: %d routes", self._path, len(routes))
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            stamp = self._file_stamp()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                self.reload()
