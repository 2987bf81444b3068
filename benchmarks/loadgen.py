"""Load generator, perf_analyzer style, in its own process.

`python -m benchmarks.loadgen --host H --port P --qos Q --window-length 6 --features 1`
connects once, subscribes to the tenant's response and error topics, prints one JSON
line `{"event": "ready", ...}` and then runs the steps it reads from stdin, one JSON
object per line, answering each with one JSON result line on stdout:

- `{"cmd": "step", "mode": "open", "rate": 2000, "windows": 1, "duration": 3, "drain": 5, "tick_ms": 1}`:
  open loop, `rate` requests/s offered on a fixed schedule for `duration` seconds,
  whatever the answers do; requests that are due go out together on a `tick_ms` tick
  (0: each at its own time, which costs the generator a wake-up per request);
- `{"cmd": "step", "mode": "closed", "concurrency": 16, ...}`: closed loop, `concurrency`
  requests outstanding at all times (each answer immediately sends the next one);
- either step may name `"model"` (the model the requests address; default `--model`) and
  `"encoding"`: `"json"` (default: OIP JSON, the tensor in `data`) or `"binary"` (the OIP binary
  tensor extension, :mod:`contract.oip_binary`, in its self-describing MQTT 3.1.1 form: JSON
  header, NUL, the tensor's little-endian float32 bytes; the request asks for a binary answer);
- `{"cmd": "settle", "timeout": 30}`: wait until late answers of earlier steps stop
  arriving; `{"cmd": "quit"}`.

Every request carries a unique id, first in its JSON (or JSON header), and so does every
answer: answers are matched by reading the id at the start of their payload, whatever follows.
The latency of a request is the time from just before
its PUBLISH is written to the socket to the arrival of the answer carrying its id.
A step counts `sent`, `answered` (predictions), `errors` (structured error answers),
`unanswered` (nothing within `drain` seconds after the last send) and `duplicates`, so
`sent == answered + errors + unanswered` always holds.

The MQTT side is :mod:`benchmarks.mini_mqtt`, a minimal MQTT 3.1.1 client (one TCP socket,
TCP_NODELAY; paho costs too much CPU per message here). Nothing here binds or connects anywhere
but the given host (the benchmark uses 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from benchmarks.mini_mqtt import MiniMqtt, MqttError, mqtt_string, publish_packet

MAX_BURST = 256  # open loop: at most this many requests in one write when catching up
MAX_STEP_S = 120.0
MAX_DRAIN_S = 120.0
MAX_CONCURRENCY = 4096


ENCODINGS = ("json", "binary")
_ID_PLACEHOLDER = "0"


def request_windows(
    windows: int, window_length: int, features: int, variants: int = 64, seed: int = 7
) -> list[np.ndarray]:
    """`variants` arrays [windows, window_length, features] of float32 in the range of BTS load readings."""
    rng = np.random.default_rng(seed + windows)
    arrays = []
    for _ in range(variants):
        level = rng.uniform(8, 22, size=(windows, 1, 1))
        steps = np.cumsum(rng.normal(0, 0.8, size=(windows, window_length, features)), axis=1)
        arrays.append(np.round(np.clip(level + steps, 6, 25), 1).astype(np.float32))
    return arrays


def json_body(array: np.ndarray) -> bytes:
    """The part of a JSON request after its id: OIP inputs, the tensor in `data`."""
    values = [round(float(v), 1) for v in array.ravel()]
    tensor = {"name": "window", "shape": list(array.shape), "datatype": "FP32", "data": values}
    return b'","inputs":' + orjson.dumps([tensor]) + b"}"


def binary_body(array: np.ndarray) -> bytes:
    """The part of a binary request after its id: the rest of the JSON header (`binary_data_output:
    true`, inputs with `binary_data_size`), NUL, the tensor's float32 bytes (contract.oip.encode_binary_request,
    the NUL-separated form: the generator speaks MQTT 3.1.1, which has no user properties)."""
    from contract.oip import encode_binary_request
    from contract.oip_binary import BinaryForm

    payload, _header_length = encode_binary_request(_ID_PLACEHOLDER, array, form=BinaryForm.SEPARATOR)
    lead = b'{"id":"' + _ID_PLACEHOLDER.encode()
    if not payload.startswith(lead):
        raise ValueError("contract.oip.encode_binary_request does not put the id first in the header")
    return payload[len(lead) :]


def request_bodies(
    windows: int, window_length: int, features: int, variants: int = 64, seed: int = 7, encoding: str = "json"
) -> list[bytes]:
    """The part of each request after its id, in `encoding` (ENCODINGS)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
    body = json_body if encoding == "json" else binary_body
    return [body(array) for array in request_windows(windows, window_length, features, variants, seed)]


SERIES_PARAMETERS = b'","parameters":{"series":"bench","step_s":1,"time":'


@dataclass
class StepState:
    mode: str
    windows: int
    base: int
    topic_field: bytes
    bodies: list[bytes]
    concurrency: int = 0
    send_ts: list[float] = field(default_factory=list)
    answers: dict[int, tuple[float, float, bool]] = field(default_factory=dict)  # idx -> (latency, at, ok)
    error_codes: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    refill: bool = True
    sent_all: bool = False
    series: bool = False  # requests name their series and time (the service scores them: issue 14)
    done: threading.Event = field(default_factory=threading.Event)


class LoadGenerator:
    def __init__(
        self, host: str, port: int, qos: int, tenant: str, model: str, window_length: int, features: int
    ) -> None:
        self.qos = qos
        self.tenant, self.model = tenant, model
        self.window_length, self.features = window_length, features
        self.prefix = f"lg{os.getpid():x}{int(time.time() * 1000) % 100000:x}-".encode()
        self._id_start = b'{"id":"' + self.prefix
        self._bodies: dict[tuple[int, str], list[bytes]] = {}
        self._next_seq = 0
        self._step: StepState | None = None
        self.stray = 0  # answers to requests of earlier steps (late) or with unknown ids
        self.unmatched_errors = 0
        self.published_qos1 = 0
        self.last_answer_at = 0.0
        self.client = MiniMqtt(host, port, f"loadgen-{os.getpid()}", self._on_publishes)
        self.client.connect([f"tenants/{tenant}/models/+/responses", f"tenants/{tenant}/errors"], qos)

    # -- sending --------------------------------------------------------------------------
    def _bodies_for(self, windows: int, encoding: str = "json") -> list[bytes]:
        bodies = self._bodies.get((windows, encoding))
        if bodies is None:
            bodies = request_bodies(windows, self.window_length, self.features, encoding=encoding)
            self._bodies[(windows, encoding)] = bodies
        return bodies

    def _send(self, step: StepState, count: int, refill: bool = False) -> None:
        """Publish `count` requests of `step` in one write; timestamps before the write.

        `refill`: a closed-loop replacement, sent only while the step still refills.
        """
        if count <= 0:
            return
        client = self.client
        bodies = step.bodies
        qos = self.qos
        topic_field = step.topic_field
        id_start = self._id_start
        with client.send_lock:
            if refill and not step.refill:
                return
            seq = self._next_seq
            self._next_seq += count
            packets = []
            for s in range(seq, seq + count):
                number = str(s).encode()
                if step.series:  # {"id":..,"parameters":{"series":..,"step_s":1,"time":<seq>},"inputs":..}
                    payload = id_start + number + SERIES_PARAMETERS + number + b"}" + bodies[s & 63][1:]
                else:
                    payload = id_start + number + bodies[s & 63]
                packets.append(publish_packet(topic_field, payload, qos, client.next_packet_id() if qos else 0))
            if qos:
                self.published_qos1 += count
            step.send_ts.extend([time.perf_counter()] * count)
            client.send_locked(b"".join(packets))

    # -- receiving (reader thread) ----------------------------------------------------------
    def _on_publishes(self, payloads: list[bytes], now: float) -> None:
        step = self._step
        id_start = self._id_start
        skip = len(id_start)
        finished = 0
        for payload in payloads:
            if not payload.startswith(id_start):
                if b'"error"' in payload:
                    self.unmatched_errors += 1
                else:
                    self.stray += 1
                continue
            end = payload.find(b'"', skip)
            try:
                seq = int(payload[skip:end])
            except ValueError:
                self.stray += 1
                continue
            if step is None or seq < step.base:
                self.stray += 1
                continue
            idx = seq - step.base
            if idx >= len(step.send_ts):
                self.stray += 1
                continue
            if idx in step.answers:
                step.duplicates += 1
                continue
            ok = payload[end + 2 : end + 9] != b'"error"'
            if not ok:
                code = "unparsed"
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    code = str(orjson.loads(payload)["parameters"]["code"])
                step.error_codes[code] = step.error_codes.get(code, 0) + 1
            step.answers[idx] = (now - step.send_ts[idx], now, ok)
            finished += 1
        if finished:
            self.last_answer_at = now
        if step is None:
            return
        if step.mode == "closed" and step.refill and finished:
            self._send(step, finished, refill=True)
        if step.sent_all and len(step.answers) >= len(step.send_ts):
            step.done.set()

    # -- steps ------------------------------------------------------------------------------
    def run_step(self, command: dict[str, Any]) -> dict[str, Any]:
        mode = str(command.get("mode", "open"))
        windows = int(command.get("windows", 1))
        model = str(command.get("model", self.model))
        encoding = str(command.get("encoding", "json"))
        series = bool(command.get("series", False))
        if series and encoding != "json":
            raise ValueError("series/time parameters are spliced into JSON requests only")
        duration = min(float(command.get("duration", 3.0)), MAX_STEP_S)
        drain = min(float(command.get("drain", 5.0)), MAX_DRAIN_S)
        if mode not in ("open", "closed") or duration <= 0 or windows <= 0:
            raise ValueError(f"bad step {command}")
        step = StepState(
            mode=mode, windows=windows, base=self._next_seq, series=series,
            topic_field=mqtt_string(f"tenants/{self.tenant}/models/{model}/requests"),
            bodies=self._bodies_for(windows, encoding),
        )
        pubacks_before, published_before = self.client.pubacks, self.published_qos1
        stray_before = self.stray
        lag_max = 0.0
        late_sends = 0
        self._step = step
        start = time.perf_counter()
        if mode == "open":
            rate = float(command["rate"])
            if rate <= 0:
                raise ValueError("rate must be positive")
            total = max(1, int(rate * duration))
            tick = float(command.get("tick_ms", 0.0)) / 1000.0
            sent = 0
            while sent < total:
                now = time.perf_counter()
                due = min(total, int((now - start) * rate) + 1)
                if due > sent:
                    count = min(due - sent, MAX_BURST)
                    lag = now - (start + sent / rate)
                    lag_max = max(lag_max, lag)
                    if lag > 0.001:
                        late_sends += count
                    self._send(step, count)
                    sent += count
                    continue
                wait = start + sent / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(max(wait, tick))
                if self.client.closed.is_set():
                    break
            offered: dict[str, Any] = {"rate": rate}
        else:
            concurrency = int(command["concurrency"])
            if not 0 < concurrency <= MAX_CONCURRENCY:
                raise ValueError(f"concurrency must be in 1..{MAX_CONCURRENCY}")
            step.concurrency = concurrency
            self._send(step, concurrency)
            deadline = start + duration
            while (remaining := deadline - time.perf_counter()) > 0 and not self.client.closed.is_set():
                time.sleep(min(remaining, 0.05))
            with self.client.send_lock:
                step.refill = False
            offered = {"concurrency": concurrency}
        send_end = time.perf_counter()
        step.sent_all = True
        if len(step.answers) >= len(step.send_ts):
            step.done.set()
        step.done.wait(drain)
        finished_at = time.perf_counter()
        self._step = None
        return self._summarize(
            step, command, offered, start, send_end, finished_at, duration, lag_max, late_sends,
            published_before, pubacks_before, stray_before,
        ) | {"model": model, "encoding": encoding}

    def _summarize(
        self,
        step: StepState,
        command: dict[str, Any],
        offered: dict[str, Any],
        start: float,
        send_end: float,
        finished_at: float,
        duration: float,
        lag_max: float,
        late_sends: int,
        published_before: int,
        pubacks_before: int,
        stray_before: int,
    ) -> dict[str, Any]:
        answers = dict(step.answers)  # snapshot: the reader may still add late ones
        sent = len(step.send_ts)
        oks = np.array([a[0] for a in answers.values() if a[2]], dtype=np.float64) * 1000.0
        ok_at = np.array([a[1] for a in answers.values() if a[2]], dtype=np.float64)
        errors = sum(1 for a in answers.values() if not a[2])
        window_end = start + duration
        in_window = int(np.count_nonzero(ok_at <= window_end)) if ok_at.size else 0
        latency: dict[str, float | None]
        if oks.size:
            p50, p90, p99, p999 = np.percentile(oks, [50, 90, 99, 99.9]).tolist()
            latency = {
                "min": float(oks.min()), "mean": float(oks.mean()), "p50": p50, "p90": p90, "p99": p99,
                "p999": p999, "max": float(oks.max()),
            }
        else:
            latency = dict.fromkeys(("min", "mean", "p50", "p90", "p99", "p999", "max"))
        qos1_sent = self.published_qos1 - published_before
        result: dict[str, Any] = {
            "event": "step",
            "mode": step.mode,
            "windows": step.windows,
            "qos": self.qos,
            **offered,
            "duration_s": duration,
            "send_s": send_end - start,
            "sent": sent,
            "answered": len(oks),
            "errors": errors,
            "error_codes": dict(step.error_codes),
            "unanswered": sent - len(answers),
            "duplicates": step.duplicates,
            "stray_answers": self.stray - stray_before,
            "send_rate": sent / max(send_end - start, 1e-9),
            "throughput": in_window / duration,
            "forecasts_per_s": in_window * step.windows / duration,
            "completion_s": finished_at - start,
            "latency_ms": latency,
            "send_lag_max_ms": lag_max * 1000.0,
            "late_sends": late_sends,
            "publishes_not_acked": max(0, qos1_sent - (self.client.pubacks - pubacks_before)) if self.qos else 0,
            "client_error": self.client.error,
        }
        if "tag" in command:
            result["tag"] = command["tag"]
        return result

    def settle(self, timeout: float, quiet: float = 0.5) -> dict[str, Any]:
        """Wait until no answers (late ones of earlier steps) arrived for `quiet` seconds."""
        deadline = time.perf_counter() + min(timeout, MAX_DRAIN_S)
        stray_before = self.stray
        while time.perf_counter() < deadline:
            if time.perf_counter() - self.last_answer_at >= quiet:
                break
            time.sleep(0.05)
        return {"event": "settled", "late_answers": self.stray - stray_before}

    def close(self) -> None:
        self.client.close()


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--window-length", type=int, default=6)
    parser.add_argument("--features", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        generator = LoadGenerator(
            args.host, args.port, args.qos, args.tenant, args.model, args.window_length, args.features
        )
    except (OSError, MqttError) as exc:
        emit({"event": "failed", "error": str(exc)})
        return 1
    emit({"event": "ready", "pid": os.getpid(), "prefix": generator.prefix.decode()})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = orjson.loads(line)
            cmd = command.get("cmd")
            if cmd == "quit":
                break
            try:
                if cmd == "step":
                    emit(generator.run_step(command))
                elif cmd == "settle":
                    emit(generator.settle(float(command.get("timeout", 30.0))))
                else:
                    emit({"event": "failed", "error": f"unknown command {cmd!r}"})
            except (ValueError, KeyError) as exc:
                emit({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
            if generator.client.closed.is_set():
                emit({"event": "failed", "error": f"connection lost: {generator.client.error}"})
                return 1
    finally:
        generator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
