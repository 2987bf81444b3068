"""Building blocks of the broker fixtures (tests/conftest.py, tests/security/conftest.py).

- :class:`BrokerHandle`: what the parametrized ``broker`` fixture yields (Mosquitto or amqtt).
- :func:`secured_mosquitto`: a Mosquitto with the dynamic-security users and rules that
  ``python -m provisioning.broker_auth`` generates from a server config (:class:`Secured`).
- :class:`ServingSetup`: a Mosquitto, copies of the models, worker processes and tenants of
  one test, all stopped at its end (the reliability and fuzz tests' shared setup).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import yaml

from tests.support.configs import server_config_dict
from tests.support.mosquitto import MosquittoBroker, find_mosquitto
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess

if TYPE_CHECKING:
    from provisioning.embedded_broker import EmbeddedBroker

WORKER_USER = "inference-worker"


@dataclass(frozen=True)
class BrokerHandle:
    """Where a broker is and what it can do."""

    kind: Literal["mosquitto", "amqtt"]
    host: str
    port: int
    supports_shared_subscriptions: bool
    supports_mqtt5: bool
    server: MosquittoBroker | EmbeddedBroker = field(repr=False)

    @property
    def protocol(self) -> Literal["3.1.1", "5"]:
        """The best MQTT protocol version this broker speaks."""
        return "5" if self.supports_mqtt5 else "3.1.1"

    def probe(self, **kwargs: Any) -> MqttProbe:
        """A connected :class:`MqttProbe` on this broker (close it, or use ``with``)."""
        kwargs.setdefault("protocol", self.protocol)
        return MqttProbe(self.host, self.port, **kwargs).connect()

    def log_tail(self) -> str:
        if isinstance(self.server, MosquittoBroker):
            return self.server.log_tail()
        return "(amqtt logs to the test process's stderr)"

    @classmethod
    def of(cls, server: BrokerHandle | MosquittoBroker | EmbeddedBroker) -> BrokerHandle:
        if isinstance(server, BrokerHandle):
            return server
        if isinstance(server, MosquittoBroker):
            return cls("mosquitto", server.connect_host, server.port, True, True, server)
        return cls(
            "amqtt",
            server.connect_host,
            server.port,
            server.supports_shared_subscriptions,
            server.supports_mqtt5,
            server,
        )


@dataclass
class Secured:
    broker: MosquittoBroker
    config: dict[str, Any]  # server config with the worker's credentials and the broker's port filled in
    passwords: dict[str, str]
    out: Path

    def probe(self, user: str | None, password: str | None = None, **kwargs: Any) -> MqttProbe:
        """A connected v5 probe as ``user`` (its real password unless one is given)."""
        if user is not None and password is None:
            password = self.passwords[user]
        kwargs.setdefault("protocol", "5")
        return MqttProbe(self.broker.host, self.broker.port, username=user, password=password, **kwargs).connect()

    def worker_config(self, **worker: Any) -> dict[str, Any]:
        return {**self.config, "worker": {**self.config.get("worker", {}), **worker}}


@contextmanager
def secured_mosquitto(
    workdir: Path, repository: Path, *, tenants: dict[str, Any] | None = None, extra_conf: Sequence[str] = ()
) -> Iterator[Secured]:
    """Generate the auth files from a server config (``tenants``; acme and beta have passwords,
    the others and the worker get generated ones) and start Mosquitto with the mosquitto.conf
    lines generated (``mosquitto-auth.conf``: ``allow_anonymous false``, dynamic security)."""
    from provisioning.broker_auth import MOSQUITTO_CONF_FILE, find_dynsec_plugin, main

    find_mosquitto()
    if find_dynsec_plugin() is None:
        pytest.fail("mosquitto_dynamic_security.so not found: install Debian's `mosquitto` package (2.0)")
    # The generated files do not depend on the broker's address; the port is filled in below.
    config = server_config_dict("127.0.0.1", 1883, repository, shared_group="inference", protocol="5", tenants=tenants)
    config["broker"]["username"] = WORKER_USER
    config_path = workdir / "server.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    passwords_path = workdir / "passwords.yaml"
    passwords_path.write_text(yaml.safe_dump({"users": {"acme": "acme-secret", "beta": "beta-secret"}}))
    out = workdir / "auth"
    assert main(["--config", str(config_path), "--passwords", str(passwords_path), "--out", str(out)]) == 0
    passwords = yaml.safe_load(passwords_path.read_text())["users"]
    config["broker"]["password"] = passwords[WORKER_USER]
    generated = (out / MOSQUITTO_CONF_FILE).read_text(encoding="utf-8").splitlines()
    with MosquittoBroker(workdir / "mosquitto", allow_anonymous=False, extra_conf=[*generated, *extra_conf]) as broker:
        config["broker"]["port"] = broker.port
        yield Secured(broker, config, passwords, out)


class ServingSetup:
    """One test's Mosquitto, private model copies, worker processes and tenants.

    Workers (:meth:`worker`) and tenants (:meth:`tenant`) are made here, not started; ``with``
    them in the test. :meth:`close` (the fixture's teardown) closes and stops whatever is left.
    """

    def __init__(self, broker: MosquittoBroker, repository: Path, workdir: Path) -> None:
        self.broker = broker
        self.repository = repository
        self.workdir = workdir
        self._workers: list[ServerProcess] = []
        self._tenants: list[MqttProbe] = []

    def config(self, tenants: dict[str, Any] | None = None, **worker: Any) -> dict[str, Any]:
        """The server config: shared subscription ``inference``, MQTT 5, ``worker`` settings."""
        return server_config_dict(self.broker.host, self.broker.port, self.repository, shared_group="inference",
                                  protocol="5", tenants=tenants, worker=worker)  # fmt: skip

    def worker(self, worker_id: str, *, tenants: dict[str, Any] | None = None, **settings: Any) -> ServerProcess:
        """A ``python -m server_app`` worker on this broker (``settings``: the ``worker`` section)."""
        process = ServerProcess.worker(self.config(tenants, **settings), self.workdir / worker_id, worker_id=worker_id)
        self._workers.append(process)
        return process

    def tenant(self, tenant: str, **kwargs: Any) -> MqttProbe:
        """:meth:`MqttProbe.for_tenant` on this broker."""
        probe = MqttProbe.for_tenant(self.broker.host, self.broker.port, tenant, **kwargs)
        self._tenants.append(probe)
        return probe

    def close(self) -> None:
        for probe in self._tenants:
            probe.close()
        for process in self._workers:
            process.stop()
