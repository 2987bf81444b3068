"""The one factory of configured paho clients (worker, tenant client, benchmarks, tests)."""

from __future__ import annotations

import contextlib
import socket
from typing import cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from contract.settings import BrokerSettings


def set_tcp_nodelay(client: paho.Client) -> None:
    """Nagle plus delayed ACK turns sub-millisecond QoS 1 round trips into ~40 ms stalls.
    Call from on_connect: paho never sets TCP_NODELAY itself."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # e.g. a socket closed meanwhile
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    broker: BrokerSettings, client_id: str, *, manual_ack: bool = False, persistent: bool = True
) -> paho.Client:
    """A paho client configured from the broker settings (protocol, credentials, TLS, backoff)."""
    v5 = broker.mqtt_version == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    password = broker.resolve_password()
    if broker.username is not None:
        client.username_pw_set(broker.username, password)
    if broker.tls is not None:
        client.tls_set(
            ca_certs=str(broker.tls.ca_file),
            certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
            keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
        )
        client.tls_insecure_set(broker.tls.insecure)
    # paho's hints say int, but it computes with floats: sub-second first retries shorten the
    # window in which a restarted broker has no subscriber for our shared subscription.
    client.reconnect_delay_set(
        min_delay=cast(int, broker.reconnect_min_delay_s), max_delay=cast(int, broker.reconnect_max_delay_s)
    )
    return client


def connect_properties(
    broker: BrokerSettings, persistent: bool, receive_maximum: int | None = None
) -> Properties | None:
    """MQTT 5 CONNECT properties: session expiry for persistent sessions, Receive Maximum."""
    if broker.mqtt_version != "5":
        return None
    properties = Properties(PacketTypes.CONNECT)
    if persistent:
        properties.SessionExpiryInterval = broker.session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = min(receive_maximum, 65535)
    return properties
