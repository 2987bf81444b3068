"""A bare echo worker: the transport ceiling the real worker is compared against.

`python -m benchmarks.echo --host 127.0.0.1 --port P --qos 1 [--group inference]`

paho-mqtt like the worker, MQTT v5 like the worker on Mosquitto, the same shared
subscription to the same request filter, TCP_NODELAY on its socket. For each request it
publishes at once, from the network thread, a fixed small answer carrying the request's id
on the response topic: no JSON decoding, no model, no queue, no batching. Whatever the real
worker does beyond that is its overhead.

Prints `{"event": "ready"}` on stdout once subscribed; exits on SIGTERM/SIGINT or when
stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

REQUEST_FILTER = "tenants/+/models/+/requests"
ID_START = b'{"id":"'
ANSWER_REST = b'","model_name":"echo","model_version":"0","outputs":[{"name":"forecast","shape":[1,1],' \
    b'"datatype":"FP32","data":[0.0]}]}'


def answer_for(payload: bytes | bytearray) -> bytes | bytearray:
    """The fixed answer with the request's id (a bytes scan; JSON parse only for odd payloads)."""
    if payload.startswith(ID_START):
        end = payload.find(b'"', len(ID_START))
        if end > 0:
            return payload[:end] + ANSWER_REST
    request_id: Any = None
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
        request_id = orjson.loads(payload).get("id")
    return b'{"id":' + orjson.dumps(request_id) + ANSWER_REST[1:]


class EchoWorker:
    def __init__(self, host: str, port: int, qos: int, group: str | None, client_id: str) -> None:
        self.host, self.port, self.qos = host, port, qos
        self.filter = f"$share/{group}/{REQUEST_FILTER}" if group else REQUEST_FILTER
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.answered = 0

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: paho.ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.filter, qos=self.qos)

    def _on_subscribe(
        self, client: paho.Client, userdata: object, mid: int, reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if not any(code.is_failure for code in reasons):
            self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
            if topic.endswith("/requests"):
                client.publish(topic[: -len("requests")] + "responses", answer_for(message.payload), qos=self.qos)
                self.answered += 1
        except Exception as exc:  # never kill paho's network thread
            print(f"echo: {type(exc).__name__}: {exc}", file=sys.stderr)

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=60, clean_start=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--group", default="inference", help="shared subscription group; '' for a plain filter")
    parser.add_argument("--client-id", default=f"bench-echo-{os.getpid()}")
    parser.add_argument("--ready-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    echo = EchoWorker(args.host, args.port, args.qos, args.group or None, args.client_id)
    echo.start()
    if not echo.subscribed.wait(args.ready_timeout):
        print(orjson.dumps({"event": "failed", "error": "not subscribed"}).decode(), flush=True)
        echo.stop()
        return 1
    print(orjson.dumps({"event": "ready", "pid": os.getpid()}).decode(), flush=True)
    stdin_closed = threading.Event()

    def watch_stdin() -> None:  # the parent going away closes our stdin
        with contextlib.suppress(OSError, ValueError):
            sys.stdin.read()
        stdin_closed.set()
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    while not stop.wait(0.5):
        pass
    echo.stop()
    print(orjson.dumps({"event": "stopped", "answered": echo.answered}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
