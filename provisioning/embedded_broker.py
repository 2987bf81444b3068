"""The embedded amqtt broker's command line: ``python -m provisioning.embedded_broker`` runs it in
the foreground, ``--hash-password`` prints a hash for its password files.

The broker itself: :mod:`provisioning.amqtt_broker` (process and handle, what amqtt 0.12 can do),
:mod:`provisioning.amqtt_config` (its config), :mod:`provisioning.amqtt_serve` (running it),
:mod:`provisioning.amqtt_auth` (its users and ACLs on disk). Their public names are re-exported here
for existing callers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from provisioning.amqtt_auth import (
    AMQTT_AUTH_VERSION,
    EmbeddedAuth,
    hash_password,
    load_embedded_auth,
    write_password_file,
)
from provisioning.amqtt_broker import AuthEmbeddedBroker, EmbeddedBroker, embedded_broker
from provisioning.amqtt_config import DEFAULT_HOST, DEFAULT_PORT, build_broker_config
from provisioning.amqtt_serve import configure_logging, port_in_use, serve
from provisioning.broker_errors import EmbeddedAuthError, EmbeddedBrokerError, EmbeddedBrokerPortError

__all__ = [
    "AMQTT_AUTH_VERSION",
    "DEFAULT_HOST",
    "AuthEmbeddedBroker",
    "EmbeddedAuth",
    "EmbeddedAuthError",
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "EmbeddedBrokerPortError",
    "build_broker_config",
    "embedded_broker",
    "hash_password",
    "load_embedded_auth",
    "main",
    "write_password_file",
]


def _load_acl_file(path: Path) -> dict[str, list[str]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EmbeddedBrokerError(f"cannot read ACL file {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(user, str) and isinstance(filters, list) and all(isinstance(f, str) for f in filters)
        for user, filters in data.items()
    ):
        raise EmbeddedBrokerError(
            f"ACL file {path} must map user names to lists of topic filters, e.g. 'acme: [tenants/acme/#]'"
        )
    return data


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.embedded_broker",
        description="Run the embedded amqtt MQTT 3.1.1 broker in the foreground (Ctrl-C to stop).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 = free port (default %(default)s)"
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        help="amqtt password file, 'user:hash' lines (Argon2; make hashes with --hash-password); "
        "anonymous clients are refused when given",
    )
    parser.add_argument(
        "--acl-file",
        type=Path,
        help="YAML/JSON mapping user name -> list of topic filters the user may publish and subscribe to",
    )
    parser.add_argument("--log-level", default="WARNING", help="amqtt log level (default %(default)s)")
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from stdin, print its hash for a password file line, and exit",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.hash_password:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            print("no password on stdin", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        if args.password_file is not None and not args.password_file.is_file():
            raise EmbeddedBrokerError(f"password file not found: {args.password_file}")
        topic_acl = _load_acl_file(args.acl_file) if args.acl_file is not None else None
        config = build_broker_config(args.host, args.port, password_file=args.password_file, topic_acl=topic_acl)
    except EmbeddedBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    level = logging.getLevelName(str(args.log_level).upper())
    if not isinstance(level, int):
        print(f"error: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    configure_logging(level)
    taken = port_in_use(config["listeners"]["default"]["bind"])
    if taken is not None:
        print(f"error: {taken} (--port)", file=sys.stderr)
        return 1

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def on_ready(port: int) -> None:
            auth = "password file" if args.password_file else "anonymous"
            print(f"amqtt broker listening on {args.host}:{port} (MQTT 3.1.1, {auth})", file=sys.stderr, flush=True)

        await serve(config, stop=stop, on_ready=on_ready)

    try:
        asyncio.run(run())
    except Exception as exc:
        print(f"error: amqtt broker failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
