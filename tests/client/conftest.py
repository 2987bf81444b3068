"""Fixtures of the client tests: sample CSVs, tenant configs, and an echo responder.

The echo responder is a tiny fake server (one paho client, its network thread only) that
answers each OIP request with forecast = last reading of each window, and each tutorial
request with ``{"LSTM": norm_1}`` (the newest normalised reading). With ``horizon`` H > 1 it
answers OIP requests as a multi-step model does, shape ``[n, H]``: step h of a window is its
last reading + (h - 1) * ``step_increment``. Per request id a rule decides: answer, drop
(never answer), delay, or a structured error. ``bodies`` keeps every request it parsed.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from client_app.config import TenantClientConfig

STATION = 1161114002
OTHER_STATION = 1161114003

# rule(request_id, seq) -> None (answer), "drop", ("error", code) or ("delay", seconds)
Rule = Callable[[str, int], Any]


HEADER = "station_id,parameter_id,reading_time,value"


def write_csv(path: Path, rows: list[tuple[Any, ...]], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows), encoding="utf-8")
    return path


def series_rows(
    count: int, station: int = STATION, start: int = 1_700_000_000, step: int = 60
) -> list[tuple[Any, ...]]:
    """A report-on-change-like series: integer values 6..25 in a slow wave."""
    return [(station, 122, start + i * step, 6 + (i * 7) % 20) for i in range(count)]


@pytest.fixture
def sample_csv(tmp_path: Path) -> Path:
    """200 readings of STATION and 20 of OTHER_STATION (rows interleaved), parameter 122."""
    rows = series_rows(200) + series_rows(20, station=OTHER_STATION)
    rows.sort(key=lambda r: (r[2], r[0]))
    return write_csv(tmp_path / "bts.csv", rows)


@pytest.fixture
def make_config(sample_csv: Path) -> Callable[..., TenantClientConfig]:
    """make_config(host, port, **overrides) -> a validated TenantClientConfig."""

    def factory(host: str = "127.0.0.1", port: int = 1883, **overrides: Any) -> TenantClientConfig:
        raw: dict[str, Any] = {
            "tenant": "acme",
            "model": "lstm",
            "broker": {"host": host, "port": port, "qos": 1, "protocol": "auto"},
            "data": str(sample_csv),
            "station": STATION,
            "window": 6,
            "rate": 0,
            "request_timeout_s": 3,
        }
        broker_overrides = overrides.pop("broker", {})
        raw["broker"].update(broker_overrides)
        raw.update(overrides)
        return TenantClientConfig.model_validate(raw)

    return factory


@dataclass
class EchoResponder:
    """A fake inference server on a real broker (see the module docstring)."""

    host: str
    port: int
    model_name: str = "lstm"
    version: str = "7"
    tutorial_in: str | None = None
    tutorial_out: str | None = None
    persistent: bool = False  # fixed client id and a persistent session (survives broker restarts)
    horizon: int = 1
    step_increment: float = 0.5
    bodies: list[dict[str, Any]] = field(default_factory=list)
    rule: Rule = field(default=lambda request_id, seq: None)
    received: list[str] = field(default_factory=list)
    callback_errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._timers: list[threading.Timer] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"echo-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv311,
            clean_session=not self.persistent,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self) -> EchoResponder:
        self.client.connect(self.host, self.port, 30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "echo responder: no SUBACK"
        return self

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Properties | None
    ) -> None:
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        topics = [("tenants/+/models/+/requests", 1)]
        if self.tutorial_in:
            topics.append((self.tutorial_in, 1))
        client.subscribe(topics)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self._handle(message.topic, bytes(message.payload))
        except Exception as exc:  # never kill the network thread; the test checks this list
            self.callback_errors.append(exc)

    def _handle(self, topic: str, payload: bytes) -> None:
        body = orjson.loads(payload)
        self.bodies.append(body)
        if topic == self.tutorial_in:
            with self._lock:
                seq = len(self.received)
                self.received.append(f"tutorial-{seq}")
            action = self.rule(f"tutorial-{seq}", seq)
            reply: dict[str, Any] = {"LSTM": body["norm_1"]}
            if isinstance(action, tuple) and action[0] == "error":
                reply = {"error": "test error", "parameters": {"code": action[1]}}
            if action != "drop":
                self.client.publish(self.tutorial_out or "", orjson.dumps(reply), qos=1)
            return
        parts = topic.split("/")
        tenant, model = parts[1], parts[3]
        request_id = body["id"]
        with self._lock:
            seq = len(self.received)
            self.received.append(request_id)
        action = self.rule(request_id, seq)
        if action == "drop":
            return
        out_topic = f"tenants/{tenant}/models/{model}/responses"
        if isinstance(action, tuple) and action[0] == "error":
            answer = {"id": request_id, "error": f"test error {action[1]}", "parameters": {"code": action[1]}}
        else:
            tensor = body["inputs"][0]
            batch, length, _ = tensor["shape"]
            data = tensor["data"]
            h = self.horizon
            forecasts = [data[(i + 1) * length - 1] + k * self.step_increment for i in range(batch) for k in range(h)]
            answer = {
                "id": request_id,
                "model_name": model,
                "model_version": self.version,
                "outputs": [{"name": "forecast", "shape": [batch, h], "datatype": "FP32", "data": forecasts}],
                "parameters": {"tenant": tenant, "served_at": time.time()},
            }
        encoded = orjson.dumps(answer)
        if isinstance(action, tuple) and action[0] == "delay":
            timer = threading.Timer(action[1], self.client.publish, args=(out_topic, encoded), kwargs={"qos": 1})
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        elif isinstance(action, tuple) and action[0] == "twice":
            self.client.publish(out_topic, encoded, qos=1)
            self.client.publish(out_topic, encoded, qos=1)
        else:
            self.client.publish(out_topic, encoded, qos=1)


@pytest.fixture
def echo(mosquitto: Any) -> Iterator[EchoResponder]:
    responder = EchoResponder(mosquitto.host, mosquitto.port, tutorial_in="inqueue/lstm", tutorial_out="outqueue/lstm")
    responder.start()
    try:
        yield responder
    finally:
        responder.stop()
        assert not responder.callback_errors, responder.callback_errors


def tenant_json(path: Path, **config: Any) -> Path:
    path.write_text(json.dumps(config), encoding="utf-8")
    return path
