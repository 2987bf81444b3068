"""Binary tensors through a real broker and worker: the same forecasts as JSON, in both
framings (the MQTT 5 user property, and the NUL-separated form any MQTT version can carry),
from our probe and from `mosquitto_pub`; malformed binary payloads each get one structured
error while everyone else is served. Counted by id."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract import oip, oip_answers, oip_binary
from contract.oip_binary import BinaryForm
from tests.support.brokers import BrokerHandle
from tests.support.configs import server_config_dict
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import windows_from_sample
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

TOPIC = "tenants/acme/models/lstm/requests"
RESPONSES = "tenants/acme/models/lstm/responses"


def _config(broker: BrokerHandle, repository: Path) -> dict[str, Any]:
    return server_config_dict(
        broker.host, broker.port, repository,
        shared_group="inference" if broker.supports_shared_subscriptions else None, protocol=broker.protocol,
    )


def _header_property(length: int) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [(oip_binary.HEADER_LENGTH_PROPERTY, str(length))]
    return properties


def test_binary_and_json_requests_get_identical_forecasts(broker: BrokerHandle, repository: Path) -> None:
    forms = [BinaryForm.SEPARATOR] + ([BinaryForm.HEADER_PROPERTY] if broker.protocol == "5" else [])
    malformed = {
        "bad-short": orjson.dumps({"id": "bad-short", "inputs": [{"name": "w", "shape": [1, 6, 1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 24}}]}) + b"\0" + b"\0" * 20,
        "bad-size": orjson.dumps({"id": "bad-size", "inputs": [{"name": "w", "shape": [1, 6, 1], "datatype": "FP64",
                                  "parameters": {"binary_data_size": 24}}]}) + b"\0" + b"\0" * 24,
    }
    with running_worker(_config(broker, repository)), broker.probe() as client:
        client.subscribe(RESPONSES)
        sent: dict[str, np.ndarray] = {}
        for i in range(20):
            windows = windows_from_sample(1 + i % 4, seed=i)
            sent[f"json-{i}"] = windows
            client.publish(TOPIC, oip.encode_request(f"json-{i}", windows), wait=False)
            for form in forms:
                request_id = f"{form.value}-{i}"
                sent[request_id] = windows
                payload, length = oip.encode_binary_request(request_id, windows, None, form)
                properties = _header_property(length) if form is BinaryForm.HEADER_PROPERTY else None
                client.publish(TOPIC, payload, properties=properties, wait=False)
        for payload in malformed.values():
            client.publish(TOPIC, payload, wait=False)
        answers = client.wait_for(lambda m: m.topic == RESPONSES, count=len(sent) + len(malformed), timeout=60)
    by_id: dict[str, list[Any]] = {}
    for message in answers:
        assert message.body is not None, message.payload[:200]
        by_id.setdefault(str(message.body.get("id")), []).append(message)
    assert sorted(by_id) == sorted([*sent, *malformed]) and all(len(v) == 1 for v in by_id.values())
    assert by_id["bad-short"][0].code == "invalid_window" and "short tensor" in by_id["bad-short"][0].body["error"]
    assert by_id["bad-size"][0].code == "invalid_window" and "8 bytes a value" in by_id["bad-size"][0].body["error"]
    for i in range(20):
        reference = by_id[f"json-{i}"][0]
        assert reference.payload[:1] == b"{" and b"\0" not in reference.payload  # JSON asked, JSON answered
        expected = np.array(reference.body["outputs"][0]["data"], dtype=np.float32)
        for form in forms:
            answer = by_id[f"{form.value}-{i}"][0]
            got = np.array(answer.body["outputs"][0]["data"], dtype=np.float32)
            np.testing.assert_array_equal(got, expected)  # bit for bit: the same float32 both ways
            user_properties = dict(answer.user_properties)
            if form is BinaryForm.HEADER_PROPERTY:  # framed as the request was
                header_length = int(user_properties[oip_binary.HEADER_LENGTH_PROPERTY])
                assert oip_binary.SEPARATOR not in answer.payload[:header_length]
                assert getattr(answer.properties, "ContentType", None) == oip_binary.CONTENT_TYPE
            else:
                assert oip_binary.HEADER_LENGTH_PROPERTY not in user_properties
                assert oip_binary.SEPARATOR in answer.payload


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's mosquitto-clients (.ci/run does)")
    return path


def test_mosquitto_pub_sends_binary_tensors_with_the_header_length_property(
    mosquitto: MosquittoBroker, repository: Path
) -> None:
    """An outsider's client: the bytes built here, the property given on mosquitto_pub's command
    line, the answer read by mosquitto_sub as hex with its user properties."""
    config = server_config_dict(mosquitto.host, mosquitto.port, repository, shared_group="inference", protocol="5")
    windows = windows_from_sample(3, seed=11)
    payload, length = oip.encode_binary_request("shell-1", windows, None, BinaryForm.HEADER_PROPERTY)
    sub = [_tool("mosquitto_sub"), "-h", mosquitto.host, "-p", str(mosquitto.port), "-V", "mqttv5", "-q", "1",
           "-c", "-i", "shell-answers", "-x", "60", "-t", RESPONSES]
    with running_worker(config):
        subprocess.run([*sub, "-E"], check=True, timeout=30, capture_output=True)
        subprocess.run(
            [_tool("mosquitto_pub"), "-h", mosquitto.host, "-p", str(mosquitto.port), "-V", "mqttv5", "-q", "1",
             "-t", TOPIC, "-s", "-D", "publish", "user-property", oip_binary.HEADER_LENGTH_PROPERTY, str(length)],
            input=payload, check=True, timeout=30, capture_output=True,
        )
        json_payload = oip.encode_request("shell-2", windows)
        subprocess.run(
            [_tool("mosquitto_pub"), "-h", mosquitto.host, "-p", str(mosquitto.port), "-V", "mqttv5", "-q", "1",
             "-t", TOPIC, "-s"], input=json_payload, check=True, timeout=30, capture_output=True,
        )
        done = subprocess.run([*sub, "-C", "2", "-W", "30", "-F", "%C\t%P\t%x"], capture_output=True, text=True,
                              timeout=60, check=False)
    lines = [line.split("\t") for line in done.stdout.strip().splitlines()]
    assert len(lines) == 2, done.stdout + done.stderr
    bodies = {}
    for content_type, user_properties, hex_payload in lines:
        answer = bytes.fromhex(hex_payload)
        header_length = None
        if oip_binary.HEADER_LENGTH_PROPERTY in user_properties:
            assert content_type == oip_binary.CONTENT_TYPE
            header_length = user_properties.split(f"{oip_binary.HEADER_LENGTH_PROPERTY}:")[1].split(",")[0]
        body = oip_answers.load_answer(answer, header_length)
        bodies[body["id"]] = body
    assert sorted(bodies) == ["shell-1", "shell-2"]
    np.testing.assert_array_equal(np.array(bodies["shell-1"]["outputs"][0]["data"], dtype=np.float32),
                                  np.array(bodies["shell-2"]["outputs"][0]["data"], dtype=np.float32))
    assert len(bodies["shell-1"]["outputs"][0]["data"]) == 3
