"""Fixtures of the security suite.

- ``repository``: a private copy of the shipped lstm and ann models.
- ``secured``: a server config, a passwords file and the files ``python -m provisioning.broker_auth``
  generates from them, and a Mosquitto started with the mosquitto.conf lines it generates
  (``mosquitto-auth.conf``: ``allow_anonymous false``, the dynamic-security plugin with the
  generated ``mosquitto-dynsec.json``, no password_file/acl_file); see :class:`Secured`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.broker_auth import MOSQUITTO_CONF_FILE, find_dynsec_plugin, main
from tests.brokers import MosquittoBroker, MqttProbe, find_mosquitto
from tests.serving import copy_model_repository, server_config_dict

WORKER_USER = "inference-worker"
TENANTS: dict[str, Any] = {
    "acme": {"models": ["lstm", "ann"]},
    "beta": {"models": ["ann"]},
    "course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm", "out_queue": "outqueue/lstm"},
}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return copy_model_repository(tmp_path / "models")


@dataclass
class Secured:
    broker: MosquittoBroker
    config: dict[str, Any]  # server config with the worker's credentials filled in
    passwords: dict[str, str]
    out: Path

    def probe(self, user: str | None, password: str | None = None, **kwargs: Any) -> MqttProbe:
        """A connected v5 probe as ``user`` (its real password unless one is given)."""
        if user is not None and password is None:
            password = self.passwords[user]
        kwargs.setdefault("protocol", "5")
        return MqttProbe(self.broker.host, self.broker.port, username=user, password=password, **kwargs).connect()

    def worker_config(self, **worker: Any) -> dict[str, Any]:
        config = {**self.config, "worker": {**self.config.get("worker", {}), **worker}}
        return config


@pytest.fixture
def secured(tmp_path: Path, repository: Path) -> Iterator[Secured]:
    find_mosquitto()
    if find_dynsec_plugin() is None:
        pytest.fail("mosquitto_dynamic_security.so not found: install Debian's `mosquitto` package (2.0)")
    # The generated files do not depend on the broker's address; the port is filled in below.
    config = server_config_dict("127.0.0.1", 1883, repository, shared_group="inference", protocol="5", tenants=TENANTS)
    config["broker"]["username"] = WORKER_USER
    config_path = tmp_path / "server.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    passwords_path = tmp_path / "passwords.yaml"
    # acme and beta have passwords; course and the worker get generated ones.
    passwords_path.write_text(yaml.safe_dump({"users": {"acme": "acme-secret", "beta": "beta-secret"}}))
    out = tmp_path / "auth"
    assert main(["--config", str(config_path), "--passwords", str(passwords_path), "--out", str(out)]) == 0
    passwords = yaml.safe_load(passwords_path.read_text())["users"]
    config["broker"]["password"] = passwords[WORKER_USER]
    generated_conf = (out / MOSQUITTO_CONF_FILE).read_text(encoding="utf-8").splitlines()
    broker = MosquittoBroker(tmp_path / "mosquitto", allow_anonymous=False, extra_conf=generated_conf)
    broker.start()
    config["broker"]["port"] = broker.port
    try:
        yield Secured(broker, config, passwords, out)
    finally:
        broker.stop()
