"""Watch the config file and the model repositories; build and hand over new serving states.

Polling (default every second) plus an explicit trigger (SIGHUP). Loading and warming happen
on this thread; the serving thread only swaps in the finished snapshot.

Which settings a reload applies and which need a restart is decided in one table,
:data:`RESTART_ONLY`; the README's configuration reference says the same for every key
(checked by tests/server/test_reload_scope.py).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from server_app.config import ServerConfig, load_config
from server_app.errors import ConfigError
from server_app.repository import list_versions
from server_app.state import ServingState, StateBuilder

log = logging.getLogger(__name__)

# Settings a running worker reads once, at start-up (a whole section, or one key in it), and
# why. Everything else takes effect on reload: models, tenants, the batching and message
# limits (read per batch from the serving state), the inbox limits and de-duplication
# (reconfigured on each new state), shutdown_grace_s (read when draining starts), reload.*
# (read before each poll).
RESTART_ONLY: dict[str, str] = {
    "broker": "the MQTT connection, session and subscriptions are set up once",
    "health": "the HTTP endpoint binds once",
    "log_level": "logging is configured once per process",
    "log_format": "logging is configured once per process",
    "worker.id": "the MQTT client id and status topic",
    "worker.max_inflight": "MQTT 5 Receive Maximum is sent in CONNECT",
}


def needs_restart(setting: str) -> bool:
    """True when `setting` (a dotted key such as ``broker.port``) is read at start-up only."""
    return any(setting == key or setting.startswith(key + ".") for key in RESTART_ONLY)


def changed_settings(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, down to the leaves of nested sections."""
    if isinstance(old, BaseModel) and isinstance(new, BaseModel) and type(old) is type(new):
        keys: list[str] = list(type(old).model_fields)
        pairs = [(key, getattr(old, key), getattr(new, key)) for key in keys]
    elif isinstance(old, dict) and isinstance(new, dict):
        pairs = [(str(key), old.get(key), new.get(key)) for key in sorted({*old, *new}, key=str)]
    else:
        return [prefix] if old != new else []
    changed: list[str] = []
    for key, before, after in pairs:
        changed += changed_settings(before, after, f"{prefix}.{key}" if prefix else key)
    return changed


def restart_only_changes(old: ServerConfig, new: ServerConfig) -> list[str]:
    """The changed settings a reload cannot apply (dotted keys, e.g. ``broker.port``)."""
    return sorted(key for key in changed_settings(old, new) if needs_restart(key))


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
        # Not the file's digest now: the file may have changed since `config` was read from it.
        # The first poll reads the file and adopts it if it differs from `config`.
        self._config_digest = ""
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
        if config == self._config:  # the first look at the file, or an edit of comments only
            self.config_error = None
            return False
        restart = restart_only_changes(self._config, config)
        if restart:
            log.warning(
                "config reload: %s changed; this worker keeps the previous value%s until it is restarted",
                ", ".join(restart), "s" if len(restart) > 1 else "",
            )
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
        new_state = self._builder.build(self._config.policy, self.state)
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
