"""The service used with clients that are not ours: Mosquitto's own `mosquitto_pub` and
`mosquitto_sub` (MQTT 5 properties on the command line), counted by id."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.configs import server_config_dict
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's mosquitto-clients (.ci/run does)")
    return path


def _sub_command(broker: MosquittoBroker, client_id: str, topic: str) -> list[str]:
    # A persistent MQTT 5 session (-c, -x): what arrives between the runs below is kept for it.
    return [_tool("mosquitto_sub"), "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
            "-c", "-i", client_id, "-x", "60", "-t", topic]


def _subscribe_first(broker: MosquittoBroker, client_id: str, topic: str) -> None:
    """Subscribe and exit once the broker confirmed it (-E): nothing published later is missed."""
    subprocess.run([*_sub_command(broker, client_id, topic), "-E"], check=True, timeout=30, capture_output=True)


def _collect(broker: MosquittoBroker, client_id: str, topic: str, count: int) -> str:
    """The session's messages: topic, content type, correlation data, user properties, payload."""
    done = subprocess.run(
        [*_sub_command(broker, client_id, topic), "-C", str(count), "-W", "30", "-F", "%t\t%C\t%D\t%P\t%p"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    return done.stdout


def _publish(broker: MosquittoBroker, topic: str, payload: bytes, *extra: str) -> None:
    subprocess.run(
        [_tool("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
         "-t", topic, "-s", *extra],
        input=payload, check=True, timeout=30, capture_output=True,
    )


def test_mosquitto_pub_and_sub_with_mqtt5_properties(mosquitto: MosquittoBroker, repository: Path) -> None:
    config = server_config_dict(mosquitto.host, mosquitto.port, repository, shared_group="inference", protocol="5")
    windows = windows_from_sample(2, seed=4)
    with running_worker(config):
        _subscribe_first(mosquitto, "cli-answers", "tenants/acme/inbox/#")
        _subscribe_first(mosquitto, "cli-errors", "tenants/acme/models/lstm/responses")
        properties = ["-D", "publish", "response-topic", "tenants/acme/inbox/cli",
                      "-D", "publish", "correlation-data", "corr-from-cli",
                      "-D", "publish", "user-property", "traceparent", TRACEPARENT]
        for n in range(3):
            _publish(mosquitto, "tenants/acme/models/lstm/requests", oip_request(f"cli-{n}", windows), *properties)
        _publish(mosquitto, "tenants/acme/models/lstm/requests", b"not json from the shell")
        out = _collect(mosquitto, "cli-answers", "tenants/acme/inbox/#", 3)
        bad = _collect(mosquitto, "cli-errors", "tenants/acme/models/lstm/responses", 1)
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert len(lines) == 3, out
    ids = []
    for topic, content_type, correlation, user_properties, payload in lines:
        body = orjson.loads(payload)
        ids.append(body["id"])
        assert topic == "tenants/acme/inbox/cli" and content_type == "application/json"
        assert correlation == "corr-from-cli" and TRACEPARENT in user_properties
        assert body["outputs"][0]["shape"] == [2, 1]
    assert sorted(ids) == ["cli-0", "cli-1", "cli-2"]  # each answered once
    error = orjson.loads(bad.strip().split("\t")[-1])
    assert error["parameters"]["code"] == "bad_json" and "id" not in error
