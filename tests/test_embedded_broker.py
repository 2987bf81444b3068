"""The embedded amqtt broker (provisioning/embedded_broker.py) with the test fixtures and probe:
round trips, process lifecycle, port errors, MQTT 3.1.1 only, no $share, auth and ACLs, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning.embedded_broker import (
    EmbeddedBroker,
    EmbeddedBrokerPortError,
    build_broker_config,
)
from tests.support.configs import REPO_ROOT
from tests.support.messages import MqttProbeError
from tests.support.ports import free_port, port_is_open, wait_port_open
from tests.support.probe import MqttProbe

pytestmark = pytest.mark.integration  # nearly every test here runs a real broker

ProbeFactory = Callable[..., MqttProbe]


def test_amqtt_round_trip(amqtt_broker: EmbeddedBroker, make_probe: ProbeFactory, topic_prefix: str) -> None:
    sub = make_probe(amqtt_broker)
    assert sub.subscribe(f"{topic_prefix}/+", qos=1) == [1]
    pub = make_probe(amqtt_broker)
    pub.publish(f"{topic_prefix}/a", b"payload", qos=1)
    [msg] = sub.wait_for(1, timeout=5)
    assert (msg.topic, msg.payload, msg.qos) == (f"{topic_prefix}/a", b"payload", 1)


def _children_of(parent: int) -> dict[int, str]:
    """Live child processes of ``parent`` (pid -> command line), from /proc."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == parent and state != "Z":
            children[int(entry.name)] = cmdline
    return children


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_broker_start_stop_leaves_no_process() -> None:
    before = _children_of(os.getpid())
    broker = EmbeddedBroker(port=0)
    broker.start()
    pid = broker.pid
    port = broker.port
    assert pid is not None and port != 0
    assert pid in _children_of(os.getpid())
    assert port_is_open("127.0.0.1", port)

    broker.stop()
    assert not broker.is_running() and broker.pid is None
    assert not _pid_alive(pid)  # gone and reaped, not a zombie
    assert not port_is_open("127.0.0.1", port)
    # multiprocessing's resource tracker may have appeared; no spawned broker may remain
    new_children = {p: cmd for p, cmd in _children_of(os.getpid()).items() if p not in before}
    assert [cmd for cmd in new_children.values() if "spawn_main" in cmd] == []
    broker.stop()  # idempotent


def test_two_embedded_brokers_at_once(make_probe: ProbeFactory, topic_prefix: str) -> None:
    with EmbeddedBroker(port=0) as one, EmbeddedBroker(port=0) as two:
        assert one.port != two.port
        assert one.pid != two.pid
        sub_one = make_probe(one)
        sub_two = make_probe(two)
        sub_one.subscribe(f"{topic_prefix}/#")
        sub_two.subscribe(f"{topic_prefix}/#")
        make_probe(one).publish(f"{topic_prefix}/x", "for one")
        make_probe(two).publish(f"{topic_prefix}/x", "for two")
        assert [m.text for m in sub_one.wait_for(1)] == ["for one"]
        assert [m.text for m in sub_two.wait_for(1)] == ["for two"]
        sub_one.assert_no_messages(0.2, topic=f"{topic_prefix}/none")
        assert len(sub_one.messages) == len(sub_two.messages) == 1


def test_embedded_broker_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        broker = EmbeddedBroker(port=port, start_timeout=20)
        expected = rf"(?i)cannot listen on 127\.0\.0\.1:{port}: .*address already in use"
        with pytest.raises(EmbeddedBrokerPortError, match=expected) as raised:
            broker.start()
        assert raised.value.port == port
        assert not broker.is_running()


def test_amqtt_refuses_mqtt_v5(amqtt_broker: EmbeddedBroker) -> None:
    probe = MqttProbe(amqtt_broker.connect_host, amqtt_broker.port, protocol="5", connect_timeout=5)
    try:
        with pytest.raises(MqttProbeError, match="Unsupported protocol version"):
            probe.connect()
    finally:
        probe.close()


def test_amqtt_has_no_shared_subscriptions(
    amqtt_broker: EmbeddedBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    assert amqtt_broker.supports_shared_subscriptions is False
    shared = make_probe(amqtt_broker)
    shared.subscribe(f"$share/workers/{topic_prefix}/t", check=False)
    plain = [make_probe(amqtt_broker) for _ in range(2)]
    for p in plain:
        p.subscribe(f"{topic_prefix}/t")
    make_probe(amqtt_broker).publish(f"{topic_prefix}/t", "hello")
    for p in plain:  # every plain subscriber gets every message
        assert p.wait_for(1)[0].text == "hello"
    shared.assert_no_messages(0.3)  # "$share/..." is only a literal filter


AUTH_USERS = {"acme": "acme-pw", "beta": "beta-pw", "worker": "worker-pw"}
AUTH_ACL = {
    "acme": ["tenants/acme/#"],
    "beta": ["tenants/beta/#"],
    "worker": ["tenants/+/models/+/requests", "tenants/#"],
}


@pytest.fixture(scope="module")
def amqtt_auth() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=0, users=AUTH_USERS, topic_acl=AUTH_ACL) as server:
        yield server


def test_amqtt_auth_config_format() -> None:
    config = build_broker_config("127.0.0.1", 1883, password_file="/x/passwd", topic_acl={"a": ["a/#"]})
    assert config["plugins"] == {
        "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": "/x/passwd"},
        "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
            "acl": {"a": ["a/#"]},
            "publish_acl": {"a": ["a/#"]},
        },
    }
    anonymous = build_broker_config("127.0.0.1", 0)
    assert anonymous["plugins"] == {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


@pytest.mark.parametrize(
    ("username", "password"),
    [("acme", "wrong"), ("nobody", "acme-pw"), (None, None), ("acme", None)],
    ids=["wrong-password", "unknown-user", "anonymous", "no-password"],
)
def test_amqtt_auth_refuses(amqtt_auth: EmbeddedBroker, username: str | None, password: str | None) -> None:
    probe = MqttProbe(amqtt_auth.connect_host, amqtt_auth.port, username=username, password=password)
    try:
        with pytest.raises(MqttProbeError, match="refused") as refused:
            probe.connect()
    finally:
        probe.close()
    assert refused.value.reason_code == 0x87  # paho's name for 3.1.1 CONNACK 5, "Not authorized"


def test_amqtt_acl_limits_subscribe_and_publish(
    amqtt_auth: EmbeddedBroker, make_probe: ProbeFactory, topic_prefix: str
) -> None:
    worker = make_probe(amqtt_auth, username="worker", password="worker-pw")
    worker.subscribe("tenants/+/models/+/requests")
    acme = make_probe(amqtt_auth, username="acme", password="acme-pw")

    # subscribe outside its ACL: SUBACK 0x80
    assert acme.subscribe("tenants/beta/#", check=False) == [0x80]
    assert acme.subscribe("tenants/acme/#") == [1]
    with pytest.raises(MqttProbeError, match="refused"):
        acme.subscribe(f"{topic_prefix}/#")

    # publish outside its ACL: acknowledged, then dropped by the broker
    acme.publish("tenants/beta/models/lstm/requests", "spoofed")
    acme.publish("tenants/acme/models/lstm/requests", "genuine")
    [msg] = worker.wait_for(1)
    assert (msg.topic, msg.text) == ("tenants/acme/models/lstm/requests", "genuine")
    worker.assert_no_messages(0.3, topic="tenants/beta/#")

    # the worker may answer on any tenant's topics; acme sees its own
    worker.publish("tenants/acme/models/lstm/responses", "answer")
    assert acme.wait_for(1, topic="tenants/acme/models/lstm/responses")[0].text == "answer"


def test_amqtt_persistent_session_queues_while_offline_when_authenticated(
    amqtt_auth: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = "tenants/acme/models/lstm/responses"
    client_id = f"acme-persistent-{time.monotonic_ns()}"
    host, port = amqtt_auth.connect_host, amqtt_auth.port
    with MqttProbe(host, port, client_id=client_id, username="acme", password="acme-pw", clean_session=False) as a:
        a.subscribe(topic)
    with MqttProbe(host, port, username="worker", password="worker-pw") as worker:
        worker.publish(topic, "queued")
    with MqttProbe(host, port, client_id=client_id, username="acme", password="acme-pw", clean_session=False) as a:
        assert a.session_present is True
        assert a.wait_for(1, timeout=5)[0].text == "queued"


def test_amqtt_anonymous_persistent_session_does_not_queue(amqtt_broker: EmbeddedBroker, topic_prefix: str) -> None:
    """Documents an amqtt 0.12 limitation: anonymous sessions get no offline queue."""
    topic = f"{topic_prefix}/t"
    client_id = f"anon-persistent-{time.monotonic_ns()}"
    host, port = amqtt_broker.connect_host, amqtt_broker.port
    with MqttProbe(host, port, client_id=client_id, clean_session=False) as a:
        a.subscribe(topic)
    with MqttProbe(host, port) as pub:
        pub.publish(topic, "lost")
    with MqttProbe(host, port, client_id=client_id, clean_session=False) as a:
        a.assert_no_messages(0.3)


def test_embedded_broker_cli(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    hashed = subprocess.run(
        [sys.executable, "-m", "provisioning.embedded_broker", "--hash-password"],
        input="s3cret\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert hashed.startswith("$argon2id$")
    (tmp_path / "passwd").write_text(f"acme:{hashed}\n")
    (tmp_path / "acl.yaml").write_text("acme: ['tenants/acme/#']\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioning.embedded_broker",
            "--port",
            str(port),
            "--password-file",
            str(tmp_path / "passwd"),
            "--acl-file",
            str(tmp_path / "acl.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert wait_port_open("127.0.0.1", port, timeout=20), "CLI broker did not listen"
        with MqttProbe("127.0.0.1", port, username="acme", password="s3cret") as probe:
            probe.subscribe("tenants/acme/#")
            probe.publish("tenants/acme/x", "hi")
            assert probe.wait_for(1)[0].text == "hi"
        bad = MqttProbe("127.0.0.1", port, username="acme", password="nope")
        with pytest.raises(MqttProbeError):
            bad.connect()
        bad.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert f"listening on 127.0.0.1:{port}" in out
