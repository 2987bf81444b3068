"""Experiment (issue 17, part 4): the single-window serving loop on a hand-written MQTT 5 client.

`python -m benchmarks.experiments.mqtt5_worker --port P [--qos 1] [--group inference]
[--model models/lstm/1] [--bare]`

The question: is paho (pure Python, a few bytes per recv, one send per packet, a Properties
object and a threading.Condition per message) what keeps our worker at ~50-60 % of the echo's
rate, or is it our own per-message work? This loop does the worker's per-message work without
paho:

- one socket, TCP_NODELAY, read in chunks of up to 256 KiB; packets split in one pass
  (benchmarks/mini_mqtt.split_packets); MQTT 5 PUBLISH properties parsed by hand (response
  topic, correlation data; the others skipped);
- micro-batches of up to 64 requests (the worker's default max_batch), through the worker's own
  FairInbox (unless --bare);
- per request: contract.oip.decode_request (the OIP JSON), the reply topic (the worker's
  resolve_reply rule: the response topic if inside the tenant's namespace, else
  tenants/<t>/models/<m>/responses), one normalise + LiteRT invoke + denormalise per batch
  on the real model (server_app.runtime, warmed, as the worker loads it),
  contract.oip.encode_response with the worker's parameters (tenant, served_at, worker,
  queue_ms, compute_ms);
- unless --bare, also the worker's bookkeeping per answer: Metrics.observe_answer and
  count_windows, ConsoleStats.record, the dedup memory (AnsweredRequests.remember);
- each answer a QoS 1 PUBLISH with the content type (and the request's correlation data);
  the request's PUBACK only after the broker's PUBACK for its answer (manual ack, like the
  worker);
- everything a turn produces (answers, PUBACKs) leaves in one sendall.

Not a server: no admission, no rate limits, no errors on bad input beyond dropping the
message, no reconnect, no keepalive. Prints `{"event": "ready"}` once subscribed, like the echo
worker; exits on SIGTERM/SIGINT or when stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import numpy as np
import orjson

from benchmarks.mini_mqtt import mqtt_string, remaining_length, split_packets
from contract import topics
from contract.errors import RequestError
from contract.oip import CONTENT_TYPE, decode_request, encode_response
from server_app.console import ConsoleStats
from server_app.inbox import FairInbox
from server_app.limits import AnsweredRequests
from server_app.metrics import Metrics
from server_app.mqtt import InboundMessage as Request
from server_app.runtime import load_model_version
from server_app.service import Prediction

CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
RECV_BYTES = 1 << 18
MAX_BATCH = 64
MAX_MESSAGE_BYTES = 1 << 20
MAX_WINDOWS = 4096
# Properties of an MQTT 5 PUBLISH: id -> how to skip its value (1, 2, 4 bytes, a string or binary
# with a 2-byte length, a string pair, a variable byte integer).
_FIXED = {0x01: 1, 0x02: 4, 0x23: 2}
_LENGTH_PREFIXED = {0x03, 0x08, 0x09}
RESPONSE_TOPIC, CORRELATION_DATA, USER_PROPERTY, SUBSCRIPTION_ID = 0x08, 0x09, 0x26, 0x0B


def varint(data: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def connect_packet_v5(client_id: str, receive_maximum: int) -> bytes:
    properties = b"\x21" + struct.pack("!H", receive_maximum)  # Receive Maximum
    variable = mqtt_string("MQTT") + bytes([5, 0x02]) + struct.pack("!H", 0) + remaining_length(len(properties))
    body = variable + properties + mqtt_string(client_id)
    return b"\x10" + remaining_length(len(body)) + body


def subscribe_packet_v5(packet_id: int, topic_filter: str, qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00" + mqtt_string(topic_filter) + bytes([qos])
    return b"\x82" + remaining_length(len(body)) + body


def parse_publish(data: bytearray, flags: int, start: int, end: int, now: float) -> Request:
    qos = (flags >> 1) & 3
    view = memoryview(data)
    length = (data[start] << 8) | data[start + 1]
    pos = start + 2
    topic = bytes(view[pos : pos + length]).decode()
    pos += length
    packet_id = 0
    if qos:
        packet_id = (data[pos] << 8) | data[pos + 1]
        pos += 2
    properties_length, pos = varint(data, pos)
    properties_end = pos + properties_length
    response_topic = correlation = None
    while pos < properties_end:
        identifier = data[pos]
        pos += 1
        if identifier in _FIXED:
            pos += _FIXED[identifier]
        elif identifier in _LENGTH_PREFIXED:
            size = (data[pos] << 8) | data[pos + 1]
            value = bytes(view[pos + 2 : pos + 2 + size])
            pos += 2 + size
            if identifier == RESPONSE_TOPIC:
                response_topic = value.decode()
            elif identifier == CORRELATION_DATA:
                correlation = value
        elif identifier == USER_PROPERTY:
            for _ in range(2):
                pos += 2 + ((data[pos] << 8) | data[pos + 1])
        elif identifier == SUBSCRIPTION_ID:
            _, pos = varint(data, pos)
        else:
            raise ValueError(f"unexpected PUBLISH property 0x{identifier:02x}")
    payload = bytes(view[properties_end:end])
    view.release()
    return Request(topic, payload, packet_id, qos, response_topic, correlation, now)


class Mqtt5Worker:
    def __init__(self, sock: socket.socket, model_dir: Path, worker_id: str, qos: int, bare: bool) -> None:
        self.sock = sock
        self.qos = qos
        self.bare = bare
        self.worker_id = worker_id
        self.model = load_model_version(model_dir, max_batch=MAX_BATCH)
        self.model_name = model_dir.parent.name
        self.inbox = FairInbox(max_messages=100_000, max_bytes=1 << 30, latency_budget_s=5.0)
        self.metrics = Metrics()
        self.console = ConsoleStats()
        self.answered = AnsweredRequests(60.0, 200_000)
        self.pending: dict[int, int] = {}  # answer packet id -> request packet id
        self.next_id = 0
        self.out = bytearray()
        self.buffer = bytearray()
        content_type = CONTENT_TYPE.encode()
        self.content_type_property = b"\x03" + struct.pack("!H", len(content_type)) + content_type
        self.topic_fields: dict[str, bytes] = {}
        self.answers = 0
        self.refused = 0

    def _packet_id(self) -> int:
        while True:
            self.next_id = self.next_id % 65535 + 1
            if self.next_id not in self.pending:
                return self.next_id

    def serve(self, stop: threading.Event) -> None:
        sock = self.sock
        sock.setblocking(False)
        while not stop.is_set():
            readable, _, _ = select.select([sock], [], [], 0.0 if self.inbox else 0.05)
            if readable:
                try:
                    data = sock.recv(RECV_BYTES)
                except BlockingIOError:
                    data = b"?"
                if not data:
                    return  # the broker closed the connection
                if data != b"?":
                    self._read(data)
            if self.inbox:
                self._batch(self.inbox.take(MAX_BATCH, 1 << 22))
            if self.out:
                sock.setblocking(True)
                sock.sendall(self.out)
                sock.setblocking(False)
                self.out.clear()

    def _read(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        packets, used = split_packets(buffer)
        now = time.monotonic()
        for kind, flags, start, end in packets:
            if kind == PUBLISH:
                self.inbox.offer(parse_publish(buffer, flags, start, end, now))
            elif kind == PUBACK:
                answer_id = (buffer[start] << 8) | buffer[start + 1]
                if end - start > 2 and buffer[start + 2] >= 0x80:
                    self.refused += 1
                request_id = self.pending.pop(answer_id, None)
                if request_id:
                    self.out += b"\x40\x02" + request_id.to_bytes(2, "big")
        del buffer[:used]

    def _reply_topic(self, request: Request) -> tuple[str, str, str] | None:
        parsed = topics.parse_request_topic(request.topic)
        if parsed is None:
            return None
        wanted = request.response_topic
        if wanted and topics.answer_topic_allowed(parsed.tenant, wanted):
            return parsed.tenant, parsed.model, wanted
        return parsed.tenant, parsed.model, topics.response_topic(parsed.tenant, parsed.model)

    def _batch(self, batch: list[Request]) -> None:
        started = time.monotonic()
        accepted = []
        for request in batch:
            reply = self._reply_topic(request)
            try:
                decoded = decode_request(request.payload, max_bytes=MAX_MESSAGE_BYTES, max_windows=MAX_WINDOWS)
            except RequestError:
                decoded = None
            if reply is None or decoded is None:  # not served here: acknowledged, dropped
                if request.qos:
                    self.out += b"\x40\x02" + request.mid.to_bytes(2, "big")
                continue
            accepted.append((request, reply, decoded))
        if not accepted:
            return
        windows = np.concatenate([d.windows for _, _, d in accepted]).astype(np.float32, copy=False)
        model = self.model
        forecasts = model.denormalize(model.predict_normalized(model.normalize(windows)))
        compute_s = time.monotonic() - started
        if not self.bare:
            self.metrics.observe_batch(len(accepted), windows.shape[0])
        offset = 0
        for request, (tenant, model_name, topic), decoded in accepted:
            count = decoded.windows.shape[0]
            mine = forecasts[offset : offset + count]
            offset += count
            parameters: dict[str, object] = {
                "tenant": tenant, "served_at": time.time(), "worker": self.worker_id,
                "queue_ms": round((started - request.received_at) * 1000.0, 3),
                "compute_ms": round(compute_s * 1000.0, 3),
            }
            payload = encode_response(decoded.id, model_name, model.version, mine, parameters)
            self._publish(topic, payload, request)
            if not self.bare:
                if decoded.id is not None and request.qos:
                    self.answered.remember(request.topic, decoded.id)
                done = time.monotonic()
                self.metrics.count_windows(model_name, model.version, count)
                self.metrics.observe_answer(tenant, model_name, "ok", done - request.received_at,
                                            started - request.received_at, model.version, compute_s)
                self.console.record(tenant, model_name, Prediction(model_name, model.version, mine, compute_s),
                                    request.received_at)
            self.answers += 1

    def _publish(self, topic: str, payload: bytes, request: Request) -> None:
        field = self.topic_fields.get(topic)
        if field is None:
            field = self.topic_fields[topic] = mqtt_string(topic)
        properties = self.content_type_property
        correlation = request.correlation_data
        if correlation is not None:
            properties = properties + b"\x09" + struct.pack("!H", len(correlation)) + correlation
        if self.qos:
            packet_id = self._packet_id()
            if request.qos:
                self.pending[packet_id] = request.mid
            header = b"\x32"
            ident = packet_id.to_bytes(2, "big")
        else:
            header, ident = b"\x30", b""
            if request.qos:
                self.out += b"\x40\x02" + request.mid.to_bytes(2, "big")
        body_length = len(field) + len(ident) + len(remaining_length(len(properties))) + len(properties) + len(payload)
        self.out += header + remaining_length(body_length) + field + ident
        self.out += remaining_length(len(properties)) + properties + payload


def handshake(sock: socket.socket, client_id: str, topic_filter: str, qos: int, timeout: float) -> None:
    sock.settimeout(timeout)
    sock.sendall(connect_packet_v5(client_id, 65535))
    sock.sendall(subscribe_packet_v5(1, topic_filter, qos))
    buffer = bytearray()
    got_connack = False
    while True:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("broker closed the connection during CONNECT/SUBSCRIBE")
        buffer += data
        packets, used = split_packets(buffer)
        for kind, _flags, start, end in packets:
            if kind == CONNACK:
                if buffer[start + 1] != 0:
                    raise ConnectionError(f"CONNACK reason 0x{buffer[start + 1]:02x}")
                got_connack = True
            elif kind == SUBACK:
                properties_length, pos = varint(buffer, start + 2)
                reasons = bytes(buffer[pos + properties_length : end])
                if not got_connack or any(code >= 0x80 for code in reasons):
                    raise ConnectionError(f"SUBACK reasons {reasons.hex()}")
                del buffer[:used]
                sock.settimeout(None)
                return
        del buffer[:used]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments.mqtt5_worker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--group", default="inference", help="shared subscription group; '' for a plain filter")
    parser.add_argument("--model", type=Path, default=Path("models/lstm/1"), help="a model version folder")
    parser.add_argument("--bare", action="store_true", help="without the worker's bookkeeping (metrics, console, "
                        "dedup memory, fair inbox still used)")
    parser.add_argument("--client-id", default=f"bench-mqtt5-{os.getpid()}")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    topic_filter = topics.subscription_filter(topics.REQUEST_FILTER, args.group or None)
    sock = socket.create_connection((args.host, args.port), timeout=10.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    worker = Mqtt5Worker(sock, args.model, args.client_id, args.qos, args.bare)
    try:
        handshake(sock, args.client_id, topic_filter, args.qos, 10.0)
    except (OSError, ConnectionError) as exc:
        print(orjson.dumps({"event": "failed", "error": str(exc)}).decode(), flush=True)
        return 1
    print(orjson.dumps({"event": "ready", "pid": os.getpid()}).decode(), flush=True)

    def watch_stdin() -> None:  # the parent going away closes our stdin
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    try:
        worker.serve(stop)
    finally:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            sock.close()
    print(orjson.dumps({"event": "stopped", "answered": worker.answers, "refused": worker.refused}).decode(),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
