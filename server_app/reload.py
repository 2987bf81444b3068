"""Watch the config file and the model repositories; build and hand over new serving states.

Polling (default every second) plus an explicit trigger (SIGHUP). Loading and warming happen
on this thread; the serving thread only swaps in the finished snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from server_app.config import ServerConfig, load_config
from server_app.errors import ConfigError
from server_app.repository import list_versions
from server_app.state import ServingState, StateBuilder

log = logging.getLogger(__name__)

# Settings read once at start-up; a reload that changes them is applied except for these.
RESTART_ONLY = ("broker", "health", "log_level")
RESTART_ONLY_WORKER = ("id", "queue_size", "max_inflight")


class Reloader:
    def __init__(
        self,
        config: ServerConfig,
        config_path: Path | None,
        publish: Callable[[ServingState], None],
        on_result: Callable[[str], None] = lambda result: None,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._publish = publish
        self._on_result = on_result
        self._builder = StateBuilder()
        self._config_digest = self._digest() if config_path is not None else ""
        self._repo_fingerprint: object = None
        self._wake = threading.Event()
        self.state: ServingState | None = None
        self.config_error: str | None = None

    def _digest(self) -> str:
        assert self._config_path is not None
        try:
            return hashlib.sha256(self._config_path.read_bytes()).hexdigest()
        except OSError:
            return ""

    def _fingerprint(self, config: ServerConfig) -> object:
        return tuple(
            (name, tuple((f.version, f.stamp) for f in list_versions(Path(model.repository))))
            for name, model in sorted(config.models.items())
        )

    def _read_new_config(self) -> bool:
        """True when a changed, valid config was adopted; an invalid one is logged and ignored."""
        if self._config_path is None:
            return False
        digest = self._digest()
        if digest == self._config_digest or not digest:
            return False
        self._config_digest = digest
        try:
            config = load_config(self._config_path)
        except ConfigError as exc:
            self.config_error = str(exc)
            log.error("config reload rejected, the previous config stays in force: %s", exc)
            self._on_result("config_rejected")
            return False
        for key in RESTART_ONLY:
            if getattr(config, key) != getattr(self._config, key):
                log.warning("config reload: %r changed; it takes effect only after a restart", key)
        for key in RESTART_ONLY_WORKER:
            if getattr(config.worker, key) != getattr(self._config.worker, key):
                log.warning("config reload: worker.%s changed; it takes effect only after a restart", key)
        self._config = config
        self.config_error = None
        log.info("config reloaded from %s", self._config_path)
        return True

    def poll_once(self) -> bool:
        """Check config and repositories; publish a new state if anything changed."""
        config_changed = self._read_new_config()
        fingerprint = self._fingerprint(self._config)
        if not config_changed and fingerprint == self._repo_fingerprint and self.state is not None:
            return False
        self._repo_fingerprint = fingerprint
        new_state = self._builder.build(self._config, self.state)
        changed = (
            self.state is None
            or config_changed
            or new_state.routes != self.state.routes
            or new_state.models != self.state.models
            or new_state.failures != self.state.failures
        )
        if not changed:
            return False
        self.state = new_state
        self._publish(new_state)
        self._on_result("applied")
        return True

    def trigger(self) -> None:
        """Reload now (SIGHUP)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Poll every reload.poll_interval_s; with reload.enabled false only on trigger (SIGHUP)."""
        while not stop.is_set():
            reload = self._config.reload
            self._wake.wait(reload.poll_interval_s if reload.enabled else None)
            self._wake.clear()
            if stop.is_set():
                break
            try:
                self.poll_once()
            except Exception:  # a reload bug must not stop future reloads or serving
                log.exception("reload failed; keeping the current state")
                self._on_result("error")
