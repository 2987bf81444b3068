"""The four generated files, written into one folder from a server config and a passwords file:
``mosquitto-dynsec.json`` and ``mosquitto-auth.conf`` (:mod:`provisioning.mosquitto_dynsec`),
``amqtt.passwd`` and ``amqtt-auth.json`` (:mod:`provisioning.amqtt_auth`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from provisioning.access_plan import AccessPlan, access_plan
from provisioning.amqtt_auth import AMQTT_AUTH_FILE, AMQTT_PASSWORD_FILE, amqtt_auth_document, hash_password
from provisioning.atomic_file import atomic_write
from provisioning.mosquitto_dynsec import (
    DYNSEC_FILE,
    DYNSEC_PLUGIN_PATHS,
    MOSQUITTO_CONF_FILE,
    dynsec_document,
    find_dynsec_plugin,
    mosquitto_conf_lines,
)
from provisioning.mosquitto_passwords import MOSQUITTO_ITERATIONS
from provisioning.passwords_file import ensure_passwords
from server_app.config import ServerConfig, load_config

__all__ = ["LEGACY_MOSQUITTO_FILES", "Generated", "generate"]


# What older versions wrote for Mosquitto's password_file/acl_file: still in force if a
# mosquitto.conf names them, and the acl_file lets any tenant join the workers' subscription.
LEGACY_MOSQUITTO_FILES = ("mosquitto.passwd", "mosquitto.acl")


@dataclass(frozen=True, slots=True)
class Generated:
    dynsec: Path
    mosquitto_conf: Path
    amqtt_passwd: Path
    amqtt_auth: Path
    plan: AccessPlan
    generated_passwords: list[str]
    unused_passwords: list[str]
    legacy_files: list[Path]

    @property
    def files(self) -> list[Path]:
        return [self.dynsec, self.mosquitto_conf, self.amqtt_passwd, self.amqtt_auth]


def generate(
    config_path: Path,
    passwords_path: Path,
    out_dir: Path,
    *,
    generate_missing: bool = True,
    iterations: int = MOSQUITTO_ITERATIONS,
    config: ServerConfig | None = None,
    dynsec_plugin: Path | None = None,
    dynsec_path: Path | None = None,
) -> Generated:
    """Write the four files into ``out_dir``; see the module docstring.

    ``dynsec_plugin``: the plugin's path for ``mosquitto-auth.conf`` (default: the one
    installed here, else the Debian path). ``dynsec_path``: where Mosquitto will find the JSON
    (default: its absolute path in ``out_dir``), e.g. a Secret's mount path in a pod.
    """
    config = config if config is not None else load_config(config_path)
    plan = access_plan(config)
    passwords = ensure_passwords(passwords_path, plan, config, generate_missing=generate_missing)
    out_dir.mkdir(parents=True, exist_ok=True)
    dynsec = out_dir / DYNSEC_FILE
    mosq_conf = out_dir / MOSQUITTO_CONF_FILE
    amqtt_pw = out_dir / AMQTT_PASSWORD_FILE
    amqtt_auth = out_dir / AMQTT_AUTH_FILE
    document = dynsec_document(plan, passwords.by_user, iterations=iterations, source=config_path.name)
    atomic_write(dynsec, (json.dumps(document, indent=2) + "\n").encode(), 0o600)
    plugin = dynsec_plugin or find_dynsec_plugin() or Path(DYNSEC_PLUGIN_PATHS[0])
    conf_lines = mosquitto_conf_lines(dynsec_path or dynsec.resolve(), plugin)
    atomic_write(mosq_conf, ("\n".join(conf_lines) + "\n").encode(), 0o644)
    amqtt_lines = "".join(f"{name}:{hash_password(passwords.by_user[name])}\n" for name in plan.names)
    atomic_write(amqtt_pw, amqtt_lines.encode(), 0o600)
    amqtt_document = amqtt_auth_document(plan, AMQTT_PASSWORD_FILE)
    atomic_write(amqtt_auth, (json.dumps(amqtt_document, indent=2) + "\n").encode(), 0o644)
    legacy = [out_dir / name for name in LEGACY_MOSQUITTO_FILES if (out_dir / name).exists()]
    return Generated(dynsec, mosq_conf, amqtt_pw, amqtt_auth, plan, passwords.generated, passwords.unused, legacy)

