"""Broker users and topic rights generated from the server config (the one source of who exists):
the command line.

``python -m provisioning.broker_auth --config server.yaml --passwords passwords.yaml --out DIR`` writes:

- ``mosquitto-dynsec.json``: the configuration file of Mosquitto's dynamic-security plugin
  (shipped with Mosquitto 2.0; Debian: ``mosquitto_dynamic_security.so``): one client per
  user with its PBKDF2-SHA512 password hash (base64 ``password``/``salt`` + ``iterations``,
  what ``mosquitto_ctrl dynsec`` writes) and one role per user with its ACLs. Everything
  not granted is denied: ``defaultACLAccess`` denies publishing, receiving and subscribing.
- ``mosquitto-auth.conf``: the lines mosquitto.conf needs for it (``allow_anonymous false``,
  ``plugin <mosquitto_dynamic_security.so>``, ``plugin_opt_config_file <the JSON>``), for
  ``include_dir`` or to copy; no ``password_file``/``acl_file``: they must not be used
  beside the plugin (Mosquitto consults an ``acl_file`` before any plugin).
- ``amqtt.passwd`` and ``amqtt-auth.json``: the same users and rules for the embedded amqtt
  broker (Argon2 hashes; separate subscribe and publish ACLs, see :func:`provisioning.amqtt_broker.embedded_broker`).

The work is done elsewhere: who may do what in :mod:`provisioning.access_plan`, Mosquitto's files in
:mod:`provisioning.mosquitto_dynsec` (with its hashes in :mod:`provisioning.mosquitto_passwords`),
the embedded broker's in :mod:`provisioning.amqtt_auth`, the passwords file in
:mod:`provisioning.passwords_file`, writing all four in :mod:`provisioning.auth_files`. Their public
names are re-exported here for existing callers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from provisioning.access_plan import AccessPlan, Rule, Subscription, UserAccess, access_plan
from provisioning.amqtt_auth import AMQTT_AUTH_FILE, AMQTT_PASSWORD_FILE, amqtt_auth_document
from provisioning.auth_errors import AuthError
from provisioning.auth_files import generate
from provisioning.mosquitto_dynsec import (
    DYNSEC_FILE,
    DYNSEC_PLUGIN_PATHS,
    MOSQUITTO_CONF_FILE,
    dynsec_document,
    find_dynsec_plugin,
    mosquitto_conf_lines,
)
from provisioning.mosquitto_passwords import (
    MOSQUITTO_ITERATIONS,
    dynsec_password,
    mosquitto_hash,
    verify_dynsec_password,
    verify_mosquitto_hash,
)
from provisioning.passwords_file import ensure_passwords
from server_app.errors import ConfigError

__all__ = [
    "AMQTT_AUTH_FILE",
    "AMQTT_PASSWORD_FILE",
    "DYNSEC_FILE",
    "DYNSEC_PLUGIN_PATHS",
    "MOSQUITTO_CONF_FILE",
    "AccessPlan",
    "AuthError",
    "Rule",
    "Subscription",
    "UserAccess",
    "access_plan",
    "amqtt_auth_document",
    "dynsec_document",
    "dynsec_password",
    "ensure_passwords",
    "find_dynsec_plugin",
    "generate",
    "main",
    "mosquitto_conf_lines",
    "mosquitto_hash",
    "verify_dynsec_password",
    "verify_mosquitto_hash",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.broker_auth",
        description=(
            "Generate broker users and ACLs from the server config: the configuration of Mosquitto's "
            f"dynamic-security plugin ({DYNSEC_FILE}) and the mosquitto.conf lines that load it "
            f"({MOSQUITTO_CONF_FILE}), and the same users and rules for the embedded amqtt broker "
            f"({AMQTT_PASSWORD_FILE}, {AMQTT_AUTH_FILE}). Users: every tenant id, and the worker service user "
            "broker.username."
        ),
        epilog=(
            "Passwords come from the --passwords YAML ({users: {acme: '...', inference-worker: '...'}}); the "
            "worker's may also come from broker.password/broker.password_file. A user without a password gets a "
            "random one, WRITTEN BACK into the --passwords file (mode 0600; YAML comments in it are not kept), "
            "unless --no-generate is given. Users in the passwords file but not in the config are left out of "
            "the generated files. Mosquitto needs the lines of mosquitto-auth.conf (allow_anonymous false, "
            "plugin, plugin_opt_config_file) and no password_file/acl_file; restart it after regenerating."
        ),
    )
    parser.add_argument("--config", type=Path, required=True, help="server config (YAML or JSON)")
    parser.add_argument("--passwords", type=Path, required=True, help="passwords YAML (created if missing)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the generated files")
    parser.add_argument(
        "--no-generate", action="store_true", help="fail instead of generating passwords for users without one"
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=MOSQUITTO_ITERATIONS,
        help="PBKDF2 iterations of the Mosquitto hashes (default %(default)s, as mosquitto_ctrl 2.0)",
    )
    parser.add_argument(
        "--dynsec-plugin",
        type=Path,
        default=None,
        help="path of mosquitto_dynamic_security.so for mosquitto-auth.conf (default: the installed one)",
    )
    parser.add_argument(
        "--dynsec-path",
        type=Path,
        default=None,
        help=f"where the broker reads {DYNSEC_FILE} (default: its path in --out), e.g. a Secret's mount path",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = generate(
            args.config,
            args.passwords,
            args.out,
            generate_missing=not args.no_generate,
            iterations=args.iterations,
            dynsec_plugin=args.dynsec_plugin,
            dynsec_path=args.dynsec_path,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in result.files:
        print(f"wrote {path}")
    print(f"users: {', '.join(result.plan.names)} (worker: {result.plan.worker_user})")
    if result.generated_passwords:
        print(
            f"generated passwords for {', '.join(result.generated_passwords)}; written to {args.passwords} (0600)",
            file=sys.stderr,
        )
        if result.plan.worker_user in result.generated_passwords:
            print(
                f"note: the worker needs its new password: put it in broker.password_file (user "
                f"{result.plan.worker_user!r})",
                file=sys.stderr,
            )
    if result.legacy_files:
        print(
            f"warning: {', '.join(str(p) for p in result.legacy_files)} from an older version: no longer written. "
            "Remove password_file/acl_file from mosquitto.conf (the acl_file lets a tenant join the workers' "
            f"subscription) and load {DYNSEC_FILE} as {MOSQUITTO_CONF_FILE} shows; then delete them.",
            file=sys.stderr,
        )
    if result.unused_passwords:
        print(
            f"note: {args.passwords} has passwords for users not in the config, left out: "
            f"{', '.join(result.unused_passwords)}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
