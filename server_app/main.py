"""`python -m server_app --config FILE [--workers N]`: parse arguments, then run."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from server_app import logs
from server_app.config import BrokerConfig, ServerConfig, load_config
from server_app.errors import ConfigError
from server_app.logs import LogFormat

log = logging.getLogger("server_app")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server_app",
        description="Multi-tenant streaming inference worker: MQTT requests in, TFLite forecasts out.",
    )
    parser.add_argument("--config", type=Path, required=True, help="server config file (YAML or JSON)")
    parser.add_argument(
        "--workers", type=int, default=1,
        help="worker processes on this machine, restarted when they die (needs a broker with $share, e.g. Mosquitto)",
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides log_level")
    return parser


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """stderr, `log_format` text or json (one JSON object per line: server_app/logs.py)."""
    logs.configure_logging(level, log_format)


def run_worker(
    config: ServerConfig,
    config_path: Path | None,
    *,
    client_id: str | None = None,
    broker: BrokerConfig | None = None,
    health_port: int | None = None,
) -> int:
    """Run one worker in this process until SIGTERM/SIGINT; SIGHUP reloads config and models."""
    from server_app.health import HealthPortError
    from server_app.worker import Worker  # keeps `--help` and config errors fast

    env = config.health.host_env
    if env is not None and config.health.port is not None and not os.environ.get(env, "").strip():
        log.warning("health.host_env: $%s is not set; the health endpoint binds health.host %s",
                    env, config.health.host)
    worker = Worker(config, config_path, client_id=client_id, broker=broker, health_port=health_port)
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        worker.reload_now()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        worker.start()
    except HealthPortError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info("worker %s started; waiting for requests", worker.worker_id)
    while not stop.wait(0.5):
        pass
    worker.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or config.log_level, config.log_format)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if config.broker.embedded:
        if args.workers > 1:
            print(
                "error: the embedded amqtt broker has no shared subscriptions ($share), so every worker would "
                "answer every request. Run Mosquitto (or EMQX) and set broker.host, or use --workers 1.",
                file=sys.stderr,
            )
            return 2
        from provisioning.embedded_broker import (
            EmbeddedBroker,
            EmbeddedBrokerError,
            EmbeddedBrokerPortError,
            embedded_broker,
        )

        broker: EmbeddedBroker
        try:
            if config.broker.embedded_auth_file is not None:
                broker = embedded_broker(config.broker.embedded_auth_file, host="127.0.0.1", port=config.broker.port)
            else:
                broker = EmbeddedBroker(host="127.0.0.1", port=config.broker.port)
            broker.start()
        except EmbeddedBrokerPortError as exc:
            print(
                f"error: broker.port {exc.port}: the embedded broker {exc.reason} "
                "(another broker running?); set another broker.port (0 = any free port)",
                file=sys.stderr,
            )
            return 1
        except EmbeddedBrokerError as exc:  # EmbeddedAuthError too: a bad broker.embedded_auth_file
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            log.info("embedded amqtt broker listening on 127.0.0.1:%d", broker.port)
            effective = config.broker.model_copy(
                update={"host": "127.0.0.1", "port": broker.port, "shared_group": None, "protocol": "3.1.1"}
            )
            return run_worker(config, args.config, broker=effective)
        finally:
            broker.stop()
    if args.workers == 1:
        return run_worker(config, args.config)
    from server_app.supervisor import Supervisor

    return Supervisor(args.config, config, args.workers, log_level=args.log_level).run()
