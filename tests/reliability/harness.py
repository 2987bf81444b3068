"""Harness of the reliability and security suites: a worker subprocess and a tenant load client.

- :class:`WorkerProcess`: ``python -m server_app --config <file>`` as a user runs it, with a
  fixed ``worker.id`` (so a restart resumes the same persistent MQTT session), its health
  endpoint on a free 127.0.0.1 port (readiness and Prometheus counters), RSS via psutil,
  SIGKILL/SIGTERM.
- :class:`TenantClient`: one tenant's paho client that publishes QoS 1 requests (payloads
  encoded before the clock starts), remembers which ones the broker acknowledged
  (PUBACK), and collects every answer on the tenant's response/errors topics by id.
- :func:`prometheus_samples`: parse /metrics text into ``{(name, labels): value}``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
import paho.mqtt.client as mqtt
import psutil  # types-psutil is not a dev dependency (yet)
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.parser import text_string_to_metric_families

from tests.brokers import LOCALHOST, free_port
from tests.serving import REPO_ROOT

Labels = tuple[tuple[str, str], ...]


def prometheus_samples(text: str) -> dict[tuple[str, Labels], float]:
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return samples


def sum_samples(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name != name:
            continue
        got = dict(sample_labels)
        if all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


# =========================================================================== worker process


class WorkerProcess:
    """One ``python -m server_app`` process with a fixed worker id and a health port."""

    def __init__(self, config: dict[str, Any], workdir: Path, *, worker_id: str, start_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.worker_id = worker_id
        self.health_port = free_port()
        self.config = {**config}
        self.config["worker"] = {**config.get("worker", {}), "id": worker_id}
        self.config["health"] = {"host": LOCALHOST, "port": self.health_port}
        self.config.setdefault("log_level", "WARNING")
        self.config_path = self.workdir / f"{worker_id}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        self.log_path = self.workdir / f"{worker_id}.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def start(self) -> WorkerProcess:
        assert self.process is None or self.process.poll() is not None, "worker already running"
        self._close_log()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== start {self.starts} at {time.time():.3f}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server_app", "--config", str(self.config_path)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.starts += 1
        return self

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://{LOCALHOST}:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def wait_ready(self, timeout: float | None = None) -> WorkerProcess:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"worker {self.worker_id} exited during start\n{self.log_tail()}")
            try:
                status, body = self._get("/readyz", timeout=1.0)
                if status == 200:
                    return self
                last = body.decode(errors="replace").strip()
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise AssertionError(f"worker {self.worker_id} not ready within the timeout: {last}\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> dict[tuple[str, Labels], float]:
        status, body = self._get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return prometheus_samples(body.decode())

    def metrics_text(self) -> str:
        return self._get("/metrics")[1].decode()

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def kill(self) -> None:
        """SIGKILL, like an OOM kill or a node failure: no drain, no DISCONNECT."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL if it overstays."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._close_log()
        return process.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no worker log)"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {self.log_path} (last {lines} lines)\n" + "\n".join(text[-lines:])

    def __enter__(self) -> WorkerProcess:
        return self.start().wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# =========================================================================== tenant client


@dataclass
class Answer:
    topic: str
    body: dict[str, Any]
    received_at: float

    @property
    def code(self) -> str:
        if "error" not in self.body:
            return "ok"
        return str(self.body.get("parameters", {}).get("code"))


@dataclass
class TlsFiles:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass
class _Sent:
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
class TenantStats:
    sent: int
    acked: int
    answered_ids: int
    answers: int
    duplicates: int
    codes: dict[str, int] = field(default_factory=dict)


class TenantClient:
    """A tenant: publishes requests (QoS 1) and collects answers by id.

    ``persistent=True`` gives a fixed client id and a persistent session (MQTT v5 session
    expiry, or clean_session False on 3.1.1), so answers published while the client is
    reconnecting (broker restart) are queued for it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tenant: str,
        *,
        username: str | None = None,
        password: str | None = None,
        protocol: str = "5",
        client_id: str | None = None,
        persistent: bool = False,
        tls: TlsFiles | None = None,
        subscribe: Iterable[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tenant = tenant
        self.v5 = protocol == "5"
        self.persistent = persistent
        self.client_id = client_id or f"tenant-{tenant}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else not persistent,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.filters = (
            list(subscribe)
            if subscribe is not None
            else [
                f"tenants/{tenant}/models/+/responses",
                f"tenants/{tenant}/errors",
            ]
        )
        self._cond = threading.Condition()
        self.answers: dict[str, list[Answer]] = {}
        self.unparsable: list[tuple[str, bytes]] = []
        self.raw: list[tuple[str, bytes]] = []  # every message, in arrival order
        self.total_answers = 0
        self._sent: list[_Sent] = []
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self.connects = 0
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        # PUBACK reason code by mid (v5; 0 on 3.1.1). Mids repeat after 65535 publishes of
        # one client: fine for these tests, which send fewer.
        self._puback_rc: dict[int, int] = {}

    # -- callbacks (network thread)
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        if reason_code.is_failure:
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _result, mid = client.subscribe([(f, 1) for f in self.filters])
        with self._cond:
            self._connected = True
            self.connects += 1
            self._sub_mid = mid
            self._cond.notify_all()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        with self._cond:
            if mid == self._sub_mid:
                self._subscribed = True
                self._cond.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        value = reason_code.value if isinstance(reason_code, ReasonCode) else 0
        with self._cond:
            self._puback_rc[mid] = int(value)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            body = orjson.loads(message.payload)
            request_id = str(body.get("id")) if isinstance(body, dict) else None
        except orjson.JSONDecodeError:
            body, request_id = None, None
        with self._cond:
            self.total_answers += 1
            self.raw.append((message.topic, bytes(message.payload)))
            if request_id is None or not isinstance(body, dict):
                self.unparsable.append((message.topic, bytes(message.payload)))
            else:
                self.answers.setdefault(request_id, []).append(Answer(message.topic, body, now))
            self._cond.notify_all()

    # -- lifecycle
    def connect(self, timeout: float = 15.0) -> TenantClient:
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600 if self.persistent else 0
            self.client.connect(self.host, self.port, 30, clean_start=not self.persistent, properties=properties)
        else:
            self.client.connect(self.host, self.port, 30)
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._connected and self._subscribed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: not connected and subscribed within {timeout} s")
                self._cond.wait(remaining)
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> TenantClient:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.client_id}: not reconnected within {timeout} s")
                self._cond.wait(remaining)

    # -- publishing
    def publish(self, topic: str, request_id: str, payload: bytes, properties: Properties | None = None) -> None:
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        self._sent.append(_Sent(request_id, topic, payload, properties, [info], time.monotonic()))

    @property
    def sent_ids(self) -> list[str]:
        return [s.request_id for s in self._sent]

    def _reason(self, info: mqtt.MQTTMessageInfo) -> int | None:
        """PUBACK reason code of one attempt; None while not acknowledged."""
        if not _acknowledged(info):
            return None
        with self._cond:
            return self._puback_rc.get(info.mid, 0)

    def acked_ids(self) -> list[str]:
        """Requests the broker acknowledged (PUBACK received, whatever its reason code)."""
        return [s.request_id for s in self._sent if any(_acknowledged(i) for i in s.attempts)]

    def accepted_ids(self) -> list[str]:
        """Requests acknowledged with reason code 0 (Success) on some attempt.

        MQTT v5 PUBACK 0x10 "No matching subscribers" is a success code too, but it tells
        the publisher the broker had nobody to deliver the message to and dropped it.
        """
        return [s.request_id for s in self._sent if any(self._reason(i) == 0 for i in s.attempts)]

    def unrouted_ids(self) -> list[str]:
        """Requests whose latest attempt was acknowledged with 0x10 and no attempt with 0."""
        out = []
        for sent in self._sent:
            reasons = [self._reason(i) for i in sent.attempts]
            if 0 not in reasons and reasons[-1] == 0x10:
                out.append(sent.request_id)
        return out

    def republish(self, ids: Iterable[str]) -> int:
        """Publish these requests again (same id and payload): what a v5 client does on 0x10."""
        wanted = set(ids)
        count = 0
        for sent in self._sent:
            if sent.request_id in wanted:
                sent.attempts.append(self.client.publish(sent.topic, sent.payload, qos=1, properties=sent.properties))
                count += 1
        return count

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_acknowledged(s.info) for s in self._sent):  # latest attempt of each
                return True
            time.sleep(0.05)
        return False

    # -- answers
    def answered(self, ids: Iterable[str]) -> set[str]:
        with self._cond:
            return {i for i in ids if i in self.answers}

    def wait_answers(self, ids: Iterable[str], timeout: float) -> set[str]:
        """Wait until every id in ``ids`` has at least one answer; return the ones still missing."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                missing = {i for i in wanted if i not in self.answers}
                if not missing:
                    return set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return missing
                self._cond.wait(min(remaining, 0.5))

    def wait_total(self, count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.total_answers < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
            return self.total_answers

    def quiet_for(self, seconds: float, timeout: float) -> bool:
        """Wait until no answer arrived for ``seconds`` (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                before = self.total_answers
            time.sleep(seconds)
            with self._cond:
                if self.total_answers == before:
                    return True
        return False

    def snapshot(self) -> dict[str, list[Answer]]:
        with self._cond:
            return {k: list(v) for k, v in self.answers.items()}

    def stats(self, ids: Iterable[str] | None = None) -> TenantStats:
        wanted = list(self.sent_ids if ids is None else ids)
        answers = self.snapshot()
        codes: Counter[str] = Counter()
        duplicates = 0
        for request_id in wanted:
            got = answers.get(request_id, [])
            duplicates += max(0, len(got) - 1)
            if got:
                codes[got[0].code] += 1
        return TenantStats(
            sent=len(wanted),
            acked=len(self.acked_ids()),
            answered_ids=sum(1 for i in wanted if i in answers),
            answers=sum(len(answers.get(i, [])) for i in wanted),
            duplicates=duplicates,
            codes=dict(codes),
        )


def _acknowledged(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACK received. Unlike ``is_published()`` this does not raise for a message published
    while disconnected (rc NO_CONN): paho keeps such a message and sends it after reconnecting."""
    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_AGAIN):
        return False
    with info._condition:
        return bool(info._published)


def paced(count: int, rate: float) -> Iterator[int]:
    """Yield 0..count-1, sleeping so that item n is yielded at start + n / rate (bounded)."""
    start = time.monotonic()
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield n
