"""Shared fixtures: real brokers (Mosquitto, embedded amqtt) and MQTT test clients.

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
from tests.brokers import BrokerHandle, MosquittoBroker, MqttProbe, find_mosquitto

BrokerLike = BrokerHandle | MosquittoBroker | EmbeddedBroker


def _mosquitto_or_fail() -> None:
    # CI installs mosquitto: a missing binary is an error, never a silent skip.
    find_mosquitto()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh Mosquitto on a free 127.0.0.1 port, persistence in tmp_path."""
    _mosquitto_or_fail()
    server = MosquittoBroker(tmp_path / "mosquitto")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One Mosquitto shared by the whole run; isolate tests by topic (``topic_prefix``)."""
    _mosquitto_or_fail()
    server = MosquittoBroker(tmp_path_factory.mktemp("mosquitto-session"))
    server.start()
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
        _mosquitto_or_fail()
        mosq = MosquittoBroker(tmp_path / "mosquitto")
        mosq.start()
        try:
            yield BrokerHandle.for_mosquitto(mosq)
        finally:
            mosq.stop()
    else:
        with EmbeddedBroker(port=0) as embedded:
            yield BrokerHandle.for_amqtt(embedded)


@pytest.fixture
def make_probe() -> Iterator[Callable[..., MqttProbe]]:
    """``make_probe(target, **kwargs)`` -> a connected MqttProbe, closed at teardown.

    ``target`` is a BrokerHandle, MosquittoBroker or EmbeddedBroker. The protocol
    defaults to v5 on Mosquitto and 3.1.1 on amqtt.
    """
    probes: list[MqttProbe] = []

    def factory(target: BrokerLike, **kwargs: Any) -> MqttProbe:
        handle = target if isinstance(target, BrokerHandle) else _handle_for(target)
        kwargs.setdefault("protocol", handle.protocol)
        probe = MqttProbe(handle.host, handle.port, **kwargs)
        probes.append(probe)
        return probe.connect()

    yield factory
    for probe in reversed(probes):
        probe.close()


def _handle_for(target: MosquittoBroker | EmbeddedBroker) -> BrokerHandle:
    if isinstance(target, MosquittoBroker):
        return BrokerHandle.for_mosquitto(target)
    return BrokerHandle.for_amqtt(target)


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A topic prefix unique to this test run, e.g. ``test/test_round_trip/3f9a1c2b``."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:40]
    return f"test/{name}/{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On failure, attach the log tail of every Mosquitto the test used to the report."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        funcargs: dict[str, Any] = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            server: Any = value.server if isinstance(value, BrokerHandle) else value
            if isinstance(server, MosquittoBroker):
                report.sections.append((f"mosquitto log ({name}, {server.workdir})", server.log_tail()))
    return report
