"""What :class:`~tests.support.probe.MqttProbe` sends and receives, and how it reports failures."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from contract import oip_answers
from contract.oip_binary import HEADER_LENGTH_PROPERTY

Payload = bytes | bytearray | str | Mapping[str, Any] | list[Any]


class MqttProbeError(RuntimeError):
    """The probe could not connect, subscribe or publish."""

    def __init__(self, message: str, reason_code: ReasonCode | int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True)
class ReceivedMessage:
    """One message a probe received; ``body`` is its JSON object (None if it is not one)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    received_at: float
    """``time.monotonic()`` when the probe's network thread got it."""
    body: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, message: mqtt.MQTTMessage, received_at: float) -> ReceivedMessage:
        payload = bytes(message.payload)
        properties = getattr(message, "properties", None)
        body: Any = None
        if payload[:1] == b"{":
            # JSON, or the binary tensor extension (its outputs turned into `data` lists)
            header_length = next(
                (v for k, v in getattr(properties, "UserProperty", None) or [] if k == HEADER_LENGTH_PROPERTY), None
            )
            try:
                body = oip_answers.load_answer(payload, header_length)
            except ValueError:  # orjson's JSONDecodeError included
                body = None
        return cls(
            topic=message.topic,
            payload=payload,
            qos=message.qos,
            retain=bool(message.retain),
            properties=properties,
            received_at=received_at,
            body=body if isinstance(body, dict) else None,
        )

    @property
    def request_id(self) -> str | None:
        """The ``id`` of an answer (None when the message is no JSON object with an id)."""
        if self.body is None or "id" not in self.body:
            return None
        return str(self.body["id"])

    @property
    def code(self) -> str:
        """``ok`` for an answer, else the error code of an error body."""
        if self.body is None or "error" not in self.body:
            return "ok"
        return str(self.body.get("parameters", {}).get("code"))

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def response_topic(self) -> str | None:
        return getattr(self.properties, "ResponseTopic", None) if self.properties is not None else None

    @property
    def correlation_data(self) -> bytes | None:
        return getattr(self.properties, "CorrelationData", None) if self.properties is not None else None

    @property
    def user_properties(self) -> list[tuple[str, str]]:
        if self.properties is None:
            return []
        return list(getattr(self.properties, "UserProperty", []))


@dataclass
class Sent:
    """A request sent with :meth:`MqttProbe.send`: every publish attempt of it (see ``republish``)."""

    request_id: str
    topic: str
    payload: bytes
    properties: Properties | None
    attempts: list[mqtt.MQTTMessageInfo]
    sent_at: float

    @property
    def info(self) -> mqtt.MQTTMessageInfo:
        return self.attempts[-1]


@dataclass
class RequestStats:
    """Counts over the requests a probe sent (see :meth:`MqttProbe.stats`)."""

    sent: int
    acked: int
    answered_ids: int
    answers: int
    duplicates: int
    codes: dict[str, int] = field(default_factory=dict)


@dataclass
class TlsFiles:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


def acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACK received. Unlike ``is_published()`` this does not raise for a message published
    while disconnected (rc NO_CONN): paho keeps such a message and sends it after reconnecting."""
    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_AGAIN):
        return False
    with info._condition:
        return bool(info._published)


def encode_payload(payload: Payload) -> bytes:
    """Bytes as they are, text as UTF-8, dicts and lists as compact JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def protocol_constant(protocol: str | int) -> MQTTProtocolVersion:
    if protocol in ("5", 5):
        return MQTTProtocolVersion.MQTTv5
    if protocol in ("3.1.1", "311", 4):
        return MQTTProtocolVersion.MQTTv311
    raise ValueError(f"unsupported MQTT protocol {protocol!r}: use '3.1.1' or '5'")


def v5_properties(
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    user_properties: Sequence[tuple[str, str]] = (),
) -> Properties:
    """PUBLISH properties for MQTT v5 (response topic, correlation data, user properties)."""
    props = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if user_properties:
        props.UserProperty = list(user_properties)
    return props


def tenant_filters(tenant: str) -> list[str]:
    """What a tenant reads: its models' response topics and its errors topic."""
    return [f"tenants/{tenant}/models/+/responses", f"tenants/{tenant}/errors"]
