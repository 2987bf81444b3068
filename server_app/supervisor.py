"""Run N worker processes on one machine and restart the ones that die (uvicorn-style).

Each worker gets a stable client id `<worker id>-<index>`, so a restarted worker resumes its
persistent MQTT session and the broker redelivers what it had not acknowledged.

Each worker process loads the config file itself (uvicorn style: the supervisor passes the
path, never a parsed config), so a worker restarted after an edit serves the file as it is
now. What the supervisor reads at its own start is only what it needs itself: the client ids
(`worker.id`), the log level of its own lines; the grace period is read again at shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from server_app.config import ServerConfig, load_config
from server_app.errors import ConfigError

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
# Health ports of all workers, for the live console: each worker's page shows all of them.
CONSOLE_PEERS_ENV = "MQTT_INFERENCE_CONSOLE_PEERS"
CONFIG_ERROR_EXIT = 2


def worker_health_port(port: int | None, index: int) -> int | None:
    """Worker `index` of a supervisor serves its health endpoint on `health.port + index`."""
    if port is None:
        return None
    return 0 if port == 0 else port + index


def _worker_main(config_path: Path, client_id: str, index: int, log_level: str | None) -> None:
    """Entry point of a spawned worker process: load the config file now, then serve."""
    from server_app.main import configure_logging, run_worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        configure_logging(log_level or "INFO")
        log.error("worker %s cannot start, the config file is invalid: %s", client_id, exc)
        raise SystemExit(CONFIG_ERROR_EXIT) from None
    configure_logging(log_level or config.log_level, config.log_format)
    health_port = worker_health_port(config.health.port, index)
    raise SystemExit(run_worker(config, config_path, client_id=client_id, health_port=health_port))


class Supervisor:
    def __init__(self, config_path: Path, config: ServerConfig, workers: int, log_level: str | None = None) -> None:
        """`config` is the file as parsed at start: the supervisor takes the worker ids from it;
        each worker loads `config_path` itself. `log_level` (--log-level) overrides the file's."""
        self._config_path = config_path
        self._config = config
        self._log_level = log_level
        self._count = workers
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, multiprocessing.process.BaseProcess] = {}
        self._restarts: dict[int, int] = {}
        self._stop = threading.Event()
        base = config.worker.resolved_id()
        self._ids = [f"{base}-{index}" for index in range(workers)]

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(self._config_path, self._ids[index], index, self._log_level),
            name=self._ids[index],
        )
        process.start()
        self._processes[index] = process
        log.info("started worker %s (pid %s)", self._ids[index], process.pid)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop.set()

    def _forward_hup(self, signum: int, frame: FrameType | None) -> None:
        for process in self._processes.values():
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._forward_hup)
        ports = [worker_health_port(self._config.health.port, index) for index in range(self._count)]
        if all(ports):  # known ports only (not null, not 0 = any free port); spawned workers inherit it
            os.environ[CONSOLE_PEERS_ENV] = ",".join(str(port) for port in ports)
        for index in range(self._count):
            self._spawn(index)
        while not self._stop.wait(0.2):
            for index, process in list(self._processes.items()):
                if process.is_alive():
                    continue
                attempt = self._restarts.get(index, 0)
                delay = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S) - 1)]
                log.warning(
                    "worker %s exited with code %s; restarting in %.1fs", self._ids[index], process.exitcode, delay
                )
                self._restarts[index] = attempt + 1
                if self._stop.wait(delay):
                    break
                self._spawn(index)
        return self._shutdown()

    def _grace_s(self) -> float:
        """The workers drain for the shutdown_grace_s of the file as they loaded it: read it again."""
        try:
            return load_config(self._config_path).worker.shutdown_grace_s
        except ConfigError:
            return self._config.worker.shutdown_grace_s

    def _shutdown(self) -> int:
        grace = self._grace_s()
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: each worker drains gracefully
        deadline = time.monotonic() + grace + 2.0
        for process in self._processes.values():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker %s did not stop within the grace period; killing it", process.name)
                process.kill()
                process.join(timeout=2.0)
        log.info("all workers stopped")
        return 0
