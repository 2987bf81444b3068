"""Tests of the real-broker fixtures (tests/support/, tests/conftest.py): ports, the probe, Mosquitto, both brokers.

The embedded amqtt broker (provisioning/embedded_broker.py): tests/test_embedded_broker.py."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.brokers import BrokerHandle
from tests.support.messages import MqttProbeError
from tests.support.mosquitto import MosquittoBroker
from tests.support.mosquitto_conf import MosquittoError, rewrite_mosquitto_conf, write_mosquitto_password_file
from tests.support.ports import free_port
from tests.support.probe import MqttProbe

pytestmark = pytest.mark.integration  # nearly every test here runs a real broker

ProbeFactory = Callable[..., MqttProbe]
REPO_ROOT = Path(__file__).resolve().parent.parent


# =========================================================================== helpers


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_probe_wait_for_times_out_with_a_useful_message(
    mosquitto_session: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    probe = make_probe(mosquitto_session)
    probe.subscribe(f"{topic_prefix}/#")
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="wanted 1 matching"):
        probe.wait_for(1, timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_probe_sets_tcp_nodelay(mosquitto_session: MosquittoBroker, make_probe: ProbeFactory) -> None:
    probe = make_probe(mosquitto_session)
    sock = probe.client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_probe_predicate_and_topic_filter(
    mosquitto_session: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    sub = make_probe(mosquitto_session)
    sub.subscribe(f"{topic_prefix}/#")
    pub = make_probe(mosquitto_session)
    for i in range(5):
        pub.publish(f"{topic_prefix}/{'even' if i % 2 == 0 else 'odd'}", {"i": i})
    evens = sub.wait_for(3, topic=f"{topic_prefix}/even")
    assert [m.json()["i"] for m in evens] == [0, 2, 4]
    odd = sub.wait_for(lambda m: m.json()["i"] == 3)
    assert odd[0].topic == f"{topic_prefix}/odd"


# =========================================================================== Mosquitto


def test_mosquitto_round_trip_qos1(mosquitto: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str) -> None:
    sub = make_probe(mosquitto, protocol="3.1.1")
    assert sub.subscribe(f"{topic_prefix}/+", qos=1) == [1]
    pub = make_probe(mosquitto, protocol="5")
    pub.publish(f"{topic_prefix}/a", b"\x00hello\xff", qos=1)
    [msg] = sub.wait_for(1, timeout=5)
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"{topic_prefix}/a", b"\x00hello\xff", 1, False)


def test_mosquitto_generated_conf(mosquitto: MosquittoBroker) -> None:
    conf = mosquitto.conf_path.read_text()
    assert f"listener {mosquitto.port} 127.0.0.1" in conf
    for line in ("set_tcp_nodelay true", "allow_anonymous true", "persistence true", "max_queued_messages 100000"):
        assert line in conf.splitlines()
    assert "running" in mosquitto.log_tail()


def test_mosquitto_v5_properties_round_trip(
    mosquitto: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    sub = make_probe(mosquitto, protocol="5")
    sub.subscribe(f"{topic_prefix}/req")
    pub = make_probe(mosquitto, protocol="5")
    props = MqttProbe.v5_properties(response_topic=f"{topic_prefix}/resp", correlation_data=b"42")
    pub.publish(f"{topic_prefix}/req", "x", properties=props)
    [msg] = sub.wait_for(1)
    assert msg.response_topic == f"{topic_prefix}/resp"
    assert msg.correlation_data == b"42"


def test_mosquitto_restart_keeps_persistent_session(mosquitto: MosquittoBroker, topic_prefix: str) -> None:
    topic = f"{topic_prefix}/queued"
    client_id = f"persistent-{os.getpid()}-{time.monotonic_ns()}"
    with MqttProbe(mosquitto.host, mosquitto.port, client_id=client_id, clean_session=False) as first:
        first.subscribe(topic, qos=1)
    with MqttProbe(mosquitto.host, mosquitto.port) as pub:
        pub.publish(topic, b"while-you-were-away", qos=1)

    port = mosquitto.port
    old_pid = mosquitto.pid
    mosquitto.restart()
    assert mosquitto.port == port
    assert mosquitto.pid != old_pid
    assert (mosquitto.persistence_location / "mosquitto.db").exists()

    with MqttProbe(mosquitto.host, mosquitto.port, client_id=client_id, clean_session=False) as again:
        assert again.session_present is True
        [msg] = again.wait_for(1, timeout=5)
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"while-you-were-away", 1)


def test_probe_reconnects_after_mosquitto_restart(
    mosquitto: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    probe = make_probe(mosquitto, protocol="3.1.1")
    mosquitto.restart()
    probe.wait_disconnected(timeout=5)
    probe.wait_connected(timeout=10)
    probe.subscribe(f"{topic_prefix}/t")
    probe.publish(f"{topic_prefix}/t", "after-restart")
    assert probe.wait_for(1)[0].text == "after-restart"


def test_mosquitto_shared_subscription_splits_messages(
    mosquitto: MosquittoBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    workers = [make_probe(mosquitto, protocol="5") for _ in range(2)]
    for worker in workers:
        worker.subscribe(f"$share/workers/{topic_prefix}/+")
    pub = make_probe(mosquitto)
    for i in range(20):
        pub.publish(f"{topic_prefix}/{i}", str(i))
    deadline = time.monotonic() + 5
    while sum(len(w.messages) for w in workers) < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    counts = [len(w.messages) for w in workers]
    assert sum(counts) == 20, counts
    assert all(c > 0 for c in counts), counts


def test_mosquitto_conf_text_from_a_manifest(tmp_path: Path, make_probe: ProbeFactory) -> None:
    manifest_conf = """\
# as in a Kubernetes ConfigMap
per_listener_settings false
listener 1883
protocol mqtt
listener 9001 0.0.0.0
protocol websockets
set_tcp_nodelay true
allow_anonymous false
password_file /mosquitto/config/passwd
acl_file /mosquitto/config/acl
persistence true
persistence_location /mosquitto/data/
log_dest stdout
user mosquitto
max_queued_messages 50000
"""
    workdir = tmp_path / "manifest"
    workdir.mkdir()
    passwd = write_mosquitto_password_file(workdir / "passwd", {"acme": "acme-pw", "worker": "worker-pw"})
    acl = workdir / "acl"
    acl.write_text(
        "user worker\ntopic readwrite tenants/#\n\n"
        "pattern write tenants/%u/models/+/requests\npattern read tenants/%u/#\n"
    )
    server = MosquittoBroker(
        workdir,
        conf_text=manifest_conf,
        file_map={"/mosquitto/config/passwd": passwd, "/mosquitto/config/acl": acl},
    )
    with server:
        conf = server.conf_path.read_text()
        assert f"listener {server.port} 127.0.0.1" in conf
        assert set(server.listener_ports) == {1883, 9001}
        assert "max_queued_messages 50000" in conf and "set_tcp_nodelay true" in conf
        assert "log_dest stdout" not in conf.split("# added")[0].replace("# (dropped for local test run) log_dest", "")

        with pytest.raises(MqttProbeError):
            make_probe(server, username="acme", password="wrong")
        with pytest.raises(MqttProbeError):
            make_probe(server)  # anonymous

        worker = make_probe(server, username="worker", password="worker-pw")
        worker.subscribe("tenants/+/models/+/requests")
        acme = make_probe(server, username="acme", password="acme-pw")
        acme.publish("tenants/beta/models/lstm/requests", "not mine")  # denied by the %u pattern
        acme.publish("tenants/acme/models/lstm/requests", "mine")
        [msg] = worker.wait_for(1)
        assert msg.topic == "tenants/acme/models/lstm/requests"
        worker.assert_no_messages(0.2, topic="tenants/beta/#")


def test_mosquitto_users_and_acl_text(tmp_path: Path, make_probe: ProbeFactory) -> None:
    acl = "user acme\ntopic readwrite tenants/acme/#\n"
    with MosquittoBroker(tmp_path / "auth", users={"acme": "pw"}, acl_text=acl) as server:
        assert "allow_anonymous false" in server.conf_path.read_text().splitlines()
        with pytest.raises(MqttProbeError, match="refused") as refused:
            make_probe(server, username="acme", password="bad")
        assert refused.value.reason_code is not None
        acme = make_probe(server, username="acme", password="pw")
        # Mosquitto 2.0 grants a SUBACK for filters outside the ACL but never delivers there
        acme.subscribe(["tenants/acme/#", "tenants/beta/#"], check=False)
        acme.publish("tenants/beta/x", "denied write")
        acme.publish("tenants/acme/x", "allowed")
        assert [m.text for m in acme.wait_for(1)] == ["allowed"]
        acme.assert_no_messages(0.2, topic="tenants/beta/#")


def test_rewrite_mosquitto_conf_requires_a_listener(tmp_path: Path) -> None:
    with pytest.raises(MosquittoError, match="listener"):
        rewrite_mosquitto_conf("allow_anonymous true\n", port=1, persistence_location=tmp_path, log_file=tmp_path / "l")


def test_mosquitto_start_failure_shows_the_log(tmp_path: Path) -> None:
    server = MosquittoBroker(tmp_path / "bad", extra_conf=["no_such_option 1"])
    with pytest.raises(MosquittoError, match=r"(?s)exited with code.*no_such_option"):
        server.start()
    assert not server.is_running()


def test_missing_mosquitto_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import mosquitto as brokers

    monkeypatch.setattr(brokers.shutil, "which", lambda _name: None)
    monkeypatch.setattr(brokers.os, "access", lambda _path, _mode: False)
    with pytest.raises(MosquittoError, match="apt-get install mosquitto"):
        brokers.find_mosquitto()


# =========================================================================== both brokers


def test_round_trip_on_each_broker(broker: BrokerHandle, make_probe: ProbeFactory, topic_prefix: str) -> None:
    assert broker.kind in ("mosquitto", "amqtt")
    assert broker.supports_shared_subscriptions == (broker.kind == "mosquitto")
    sub = make_probe(broker)
    sub.subscribe(f"{topic_prefix}/#", qos=1)
    pub = make_probe(broker)
    for i in range(10):
        pub.publish(f"{topic_prefix}/n", {"i": i}, qos=1)
    got = sub.wait_for(10, timeout=5)
    assert [m.json()["i"] for m in got] == list(range(10))


def test_retained_message_on_each_broker(broker: BrokerHandle, make_probe: ProbeFactory, topic_prefix: str) -> None:
    pub = make_probe(broker)
    pub.publish(f"{topic_prefix}/state", "on", retain=True)
    late = make_probe(broker)
    late.subscribe(f"{topic_prefix}/state")
    [msg] = late.wait_for(1)
    assert (msg.text, msg.retain) == ("on", True)
