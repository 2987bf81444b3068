"""Shared fixtures: real brokers (Mosquitto, embedded amqtt), MQTT test clients, served setups.

Fixtures
- ``mosquitto``: a fresh :class:`MosquittoBroker` per test (generated conf, work dir in tmp_path).
- ``mosquitto_session``: one Mosquitto for the whole run (use unique topics: ``topic_prefix``).
- ``amqtt_broker``: a fresh anonymous :class:`~provisioning.embedded_broker.EmbeddedBroker` per test.
- ``amqtt_session``: one embedded amqtt broker for the whole run.
- ``broker``: parametrized over ``["mosquitto", "amqtt"]``, a fresh broker per test, as a
  :class:`BrokerHandle` (``.host``, ``.port``, ``.kind``, ``.supports_shared_subscriptions``,
  ``.supports_mqtt5``, ``.protocol``, ``.server``, ``.probe(**kw)``).
- ``make_probe``: factory ``make_probe(broker_or_handle, **MqttProbe kwargs)`` returning a
  connected :class:`MqttProbe`; every probe is closed at teardown.
- ``topic_prefix``: a unique ``test/<name>/<hex>`` topic prefix for the test.
- ``repository``: a private copy of the shipped lstm and ann models.
- ``serving``: a :class:`ServingSetup` on ``mosquitto`` and ``repository``: worker processes
  and tenants of the test, stopped and closed at teardown.

When a test fails, the tail of each Mosquitto log it used is attached to the report.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning.embedded_broker import EmbeddedBroker
from tests.support.brokers import BrokerHandle, ServingSetup
from tests.support.configs import copy_model_repository
from tests.support.mosquitto import MosquittoBroker, find_mosquitto
from tests.support.probe import MqttProbe

BrokerLike = BrokerHandle | MosquittoBroker | EmbeddedBroker



def _started_mosquitto(workdir: Path) -> MosquittoBroker:
    find_mosquitto()  # CI installs mosquitto: a missing binary is an error, never a silent skip
    return MosquittoBroker(workdir).start()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto on a free 127.0.0.1 port, persistence in tmp_path."""
    server = _started_mosquitto(tmp_path / "mosquitto")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One Mosquitto shared by the whole run; isolate tests by topic (``topic_prefix``)."""
    server = _started_mosquitto(tmp_path_factory.mktemp("mosquitto-session"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def amqtt_broker() -> Iterator[EmbeddedBroker]:
    """A fresh anonymous embedded amqtt broker (MQTT 3.1.1, no $share) on a free port."""
    with EmbeddedBroker(port=0) as server:
        yield server


@pytest.fixture(scope="session")
def amqtt_session() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=0) as server:
        yield server


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerHandle]:
    """A fresh broker of each kind; check ``.supports_shared_subscriptions``/``.supports_mqtt5``."""
    if request.param == "mosquitto":
        mosq = _started_mosquitto(tmp_path / "mosquitto")
        try:
            yield BrokerHandle.of(mosq)
        finally:
            mosq.stop()
    else:
        with EmbeddedBroker(port=0) as embedded:
            yield BrokerHandle.of(embedded)


@pytest.fixture
def make_probe() -> Iterator[Callable[..., MqttProbe]]:
    """``make_probe(target, **kwargs)`` -> a connected MqttProbe, closed at teardown.

    ``target`` is a BrokerHandle, MosquittoBroker or EmbeddedBroker. The protocol
    defaults to v5 on Mosquitto and 3.1.1 on amqtt.
    """
    probes: list[MqttProbe] = []

    def factory(target: BrokerLike, **kwargs: Any) -> MqttProbe:
        handle = BrokerHandle.of(target)
        kwargs.setdefault("protocol", handle.protocol)
        probe = MqttProbe(handle.host, handle.port, **kwargs)
        probes.append(probe)
        return probe.connect()

    yield factory
    for probe in reversed(probes):
        probe.close()


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test run, e.g. ``test/test_round_trip/3f9a1c2b``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:40]
    return f"test/{name}/{uuid.uuid4().hex[:8]}"


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A private copy of the shipped lstm and ann models."""
    return copy_model_repository(tmp_path / "models")


@pytest.fixture
def serving(mosquitto: MosquittoBroker, repository: Path, tmp_path: Path) -> Iterator[ServingSetup]:
    """Worker processes and tenants on ``mosquitto`` serving ``repository``; all stopped at teardown."""
    setup = ServingSetup(mosquitto, repository, tmp_path / "serving")
    try:
        yield setup
    finally:
        setup.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, attach the log tail of every Mosquitto the test used to the report."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            server: Any = value.server if isinstance(value, BrokerHandle) else getattr(value, "broker", value)
            if isinstance(server, MosquittoBroker):
                report.sections.append((f"mosquitto log ({name}, {server.workdir})", server.log_tail()))
    return report
