"""A minimal MQTT 3.1.1 client over one TCP socket (TCP_NODELAY), for the load generator.

Written for this purpose: paho spends ~20-40 us of Python per message, which on two cores would
make the generator compete with the system under test for CPU more than the echo worker
does. It speaks exactly what the generator needs: CONNECT, SUBSCRIBE, PUBLISH QoS 0/1 in
both directions, PUBACK, DISCONNECT. Nothing here binds or connects anywhere but the given
host (the benchmark uses 127.0.0.1 only).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable

__all__ = [
    "MiniMqtt",
    "MqttError",
    "connect_packet",
    "mqtt_string",
    "publish_packet",
    "remaining_length",
    "split_packets",
    "subscribe_packet",
]

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13
RECV_BYTES = 1 << 18


class MqttError(RuntimeError):
    """The broker refused us or went away."""


def remaining_length(n: int) -> bytes:
    """MQTT variable-length encoding of a packet's remaining length."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, keepalive: int = 0) -> bytes:
    body = mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive) + mqtt_string(client_id)
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[str], qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(mqtt_string(f) + bytes([qos]) for f in filters)
    return b"\x82" + remaining_length(len(body)) + body


def publish_packet(topic_field: bytes, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    if qos:
        return (
            b"\x32"
            + remaining_length(len(topic_field) + 2 + len(payload))
            + topic_field
            + packet_id.to_bytes(2, "big")
            + payload
        )
    return b"\x30" + remaining_length(len(topic_field) + len(payload)) + topic_field + payload


def split_packets(buffer: bytearray) -> tuple[list[tuple[int, int, int, int]], int]:
    """Complete packets at the start of `buffer` as (type, flags, body start, body end), and
    how many bytes they take."""
    packets: list[tuple[int, int, int, int]] = []
    size = len(buffer)
    pos = 0
    while size - pos >= 2:
        first = buffer[pos]
        value, multiplier, i = 0, 1, pos + 1
        complete = False
        while i < size and i - pos <= 4:
            byte = buffer[i]
            value += (byte & 0x7F) * multiplier
            multiplier *= 128
            i += 1
            if not byte & 0x80:
                complete = True
                break
        if not complete:
            if i - pos > 4:
                raise MqttError("malformed remaining length from the broker")
            break
        end = i + value
        if end > size:
            break
        packets.append((first >> 4, first & 0x0F, i, end))
        pos = end
    return packets, pos


class MiniMqtt:
    """One MQTT 3.1.1 connection: a reader thread hands PUBLISH payloads to `on_publishes`."""

    def __init__(self, host: str, port: int, client_id: str, on_publishes: Callable[[list[bytes], float], None]):
        self.host, self.port, self.client_id = host, port, client_id
        self._on_publishes = on_publishes
        self._sock: socket.socket | None = None
        self.send_lock = threading.Lock()
        self._packet_id = 0
        self.pubacks = 0
        self._suback = threading.Event()
        self._connack = threading.Event()
        self._connack_code = -1
        self.closed = threading.Event()
        self.error: str | None = None
        self._reader: threading.Thread | None = None

    def next_packet_id(self) -> int:
        """Call with send_lock held."""
        self._packet_id = self._packet_id % 65535 + 1
        return self._packet_id

    def connect(self, filters: list[str], qos: int, timeout: float = 10.0) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, name="mqtt-reader", daemon=True)
        self._reader.start()
        self.send(connect_packet(self.client_id))
        if not self._connack.wait(timeout) or self._connack_code != 0:
            raise MqttError(f"no CONNACK or refused ({self._connack_code}) from {self.host}:{self.port}")
        with self.send_lock:
            packet_id = self.next_packet_id()
        self.send(subscribe_packet(packet_id, filters, qos))
        if not self._suback.wait(timeout):
            raise MqttError(f"no SUBACK for {filters}")

    def send(self, data: bytes) -> None:
        assert self._sock is not None
        with self.send_lock:
            self._sock.sendall(data)

    def send_locked(self, data: bytes) -> None:
        """sendall with send_lock already held by the caller."""
        assert self._sock is not None
        self._sock.sendall(data)

    def close(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with contextlib.suppress(OSError):
            self.send(b"\xe0\x00")  # DISCONNECT
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        buffer = bytearray()
        try:
            while True:
                chunk = sock.recv(RECV_BYTES)
                if not chunk:
                    break
                now = time.perf_counter()
                buffer += chunk
                packets, used = split_packets(buffer)
                payloads: list[bytes] = []
                acks: list[bytes] = []
                for kind, flags, start, end in packets:
                    if kind == PUBLISH:
                        start += 2 + ((buffer[start] << 8) | buffer[start + 1])
                        if flags & 0x06:
                            acks.append(b"\x40\x02" + buffer[start : start + 2])
                            start += 2
                        payloads.append(bytes(buffer[start:end]))
                    elif kind == PUBACK:
                        self.pubacks += 1
                    elif kind == SUBACK:
                        if 0x80 in buffer[start + 2 : end]:
                            self.error = "subscription refused"
                        self._suback.set()
                    elif kind == CONNACK:
                        self._connack_code = buffer[start + 1]
                        self._connack.set()
                del buffer[:used]
                if acks:
                    self.send(b"".join(acks))
                if payloads:
                    self._on_publishes(payloads, now)
        except OSError as exc:
            self.error = f"socket: {exc}"
        except Exception as exc:  # pragma: no cover - a bug here must not hang the benchmark silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.closed.set()
            self._connack.set()
            self._suback.set()
