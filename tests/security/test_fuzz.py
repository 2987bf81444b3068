"""10,000+ bad payloads against one worker on Mosquitto, interleaved with another tenant's traffic.

Deterministic (seeded ``random.Random``) and bounded. What is sent to tenant ``fuzz``:
random bytes, invalid UTF-8, deep JSON (nested past orjson's limit and just under it), JSON
beyond ``worker.max_message_bytes`` (64 KiB here), wrong shapes and types, NaN/Inf (as
``1e39`` and as strings), empty and oversized batches, unknown models, models the tenant may
not use, unknown tenants, and topics whose tenant or model segment is not a valid name. Topics
with ``+``/``#`` cannot be published at all (paho raises; checked). Meanwhile tenant ``good``
sends valid requests.

The publishers keep at most ``MAX_IN_FLIGHT`` answerable requests unanswered, so the worker is
never overloaded whatever the machine's speed, and ``overloaded`` is never an accepted answer.

Checked: every valid request is answered exactly once and correctly (same forecast as a direct
LiteRT invoke); every bad message that can be tied to a tenant gets exactly one structured
error (by id where the payload has one, by count per topic where it has none) with the code the
wire protocol prescribes; messages that cannot be tied to any tenant are dropped and counted
(``inference_dropped_messages``); the worker stays alive and ready; its RSS does not keep
growing (after warm-up vs at the end, generous bound).
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from server_app.runtime import load_model_version
from tests.support.brokers import ServingSetup
from tests.support.payloads import paced, windows_from_sample
from tests.support.workers import sum_samples

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261122
BAD_COUNT = 10_000
GOOD_EVERY = 10  # one valid request from tenant `good` after every 10 bad ones
MAX_MESSAGE_BYTES = 64 * 1024
MAX_WINDOWS = 64
PUBLISH_RATE = 2500.0  # messages/s from the two clients together, at most
# At most this many answerable requests (valid or bad) published and not yet answered: the
# test is about bad input, not overload, so its publishers never outrun the worker, however
# slow the machine (a free-running 2,500 msg/s publisher filled the worker's queue on a busy
# 2-core machine, and valid requests were answered `overloaded`). Far below queue_size (1000)
# even counting the unanswerable messages queued between them (about 1 in 10).
MAX_IN_FLIGHT = 100
STALL_S = 60.0  # no answer at all for this long while requests are outstanding: the worker is stuck
RSS_GROWTH_LIMIT = 100 * 2**20
ERROR_CODES = {
    "bad_json",
    "invalid_request",
    "invalid_window",
    "too_large",
    "unknown_tenant",
    "unknown_model",
    "model_not_allowed",
    "overloaded",
    "rate_limited",
    "internal",
}

FUZZ_REQUESTS = "tenants/fuzz/models/lstm/requests"


@dataclass
class Bad:
    """One bad message: where it goes, and what answer (if any) is expected where."""

    category: str
    topic: str
    payload: bytes
    request_id: str | None  # the id the error must carry (None: the payload has no usable id)
    code: str | None  # the exact expected code; None: any error code (random bytes)
    reply_topic: str | None  # None: cannot be tied to a tenant, dropped by the worker
    response_topic: str | None = None  # MQTT v5 ResponseTopic property to send


def _request(request_id: Any, shape: Any, data: Any, **extra: Any) -> bytes:
    body: dict[str, Any] = {
        "id": request_id,
        "inputs": [{"name": "window", "shape": shape, "datatype": "FP32", "data": data}],
    }
    body.update(extra)
    return orjson.dumps(body)


def _valid_window(rng: random.Random, batch: int = 1) -> list[float]:
    return [round(rng.uniform(6, 25), 2) for _ in range(batch * 6)]


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def _id(self) -> str:
        self.n += 1
        return f"bad-{self.n:06d}"

    def make(self) -> Bad:
        kinds: list[tuple[Callable[[], Bad], int]] = [
            (self.random_bytes, 14),
            (self.invalid_utf8, 6),
            (self.deep_json, 4),
            (self.too_large, 2),
            (self.wrong_shape, 14),
            (self.wrong_types, 14),
            (self.non_finite, 10),
            (self.batch_size, 8),
            (self.bad_structure, 8),
            (self.bad_id, 4),
            (self.route_errors, 10),
            (self.odd_topics, 6),
        ]
        makers, weights = zip(*kinds, strict=True)
        return self.rng.choices(makers, weights)[0]()

    # -- payload-level faults, all on the fuzz tenant's lstm topic
    def random_bytes(self) -> Bad:
        payload = self.rng.randbytes(self.rng.randint(0, 300))
        try:  # a random string that happens to be JSON is still no request
            parsed = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Bad("random_bytes", FUZZ_REQUESTS, payload, None, "bad_json", _responses("fuzz"))
        code = "invalid_request"
        request_id = None
        if isinstance(parsed, dict) and isinstance(parsed.get("id"), str) and 0 < len(parsed["id"]) <= 256:
            request_id = parsed["id"]
        return Bad("random_bytes", FUZZ_REQUESTS, payload, request_id, code, _responses("fuzz"))

    def invalid_utf8(self) -> Bad:
        request_id = self._id()
        good = _request(request_id, [1, 6, 1], _valid_window(self.rng))
        cut = self.rng.randrange(1, len(good))
        bad_bytes = self.rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
        payload = good[:cut] + bad_bytes + good[cut:]
        # The answer carries the id when the payload starts with it intact (read without parsing).
        intact = cut >= len(b'{"id":"' + request_id.encode() + b'"')
        return Bad("invalid_utf8", FUZZ_REQUESTS, payload, request_id if intact else None, "bad_json",
                   _responses("fuzz"))

    def deep_json(self) -> Bad:
        depth = self.rng.choice([300, 1000, 1100, 5000, 30_000])
        lists = self.rng.random() < 0.5
        payload = b"[" * depth + b"]" * depth if lists else b'{"a":' * depth + b"1" + b"}" * depth
        # orjson refuses nesting deeper than 1024 (bad_json); shallower is valid JSON but no request.
        code = "bad_json" if depth > 1024 else "invalid_request"
        if len(payload) > MAX_MESSAGE_BYTES:
            code = "too_large"
        return Bad("deep_json", FUZZ_REQUESTS, payload, None, code, _responses("fuzz"))

    def too_large(self) -> Bad:
        request_id = self._id()
        size = self.rng.randint(MAX_MESSAGE_BYTES + 1, 3 * MAX_MESSAGE_BYTES)
        values = self.rng.choice(["data", "padding"])
        if values == "data":
            count = size // 3
            payload = _request(request_id, [count // 6, 6, 1], [1.5] * count)
        else:
            payload = _request(request_id, [1, 6, 1], _valid_window(self.rng), parameters={"pad": "x" * size})
        assert len(payload) > MAX_MESSAGE_BYTES
        return Bad("too_large", FUZZ_REQUESTS, payload, request_id, "too_large", _responses("fuzz"))

    def wrong_shape(self) -> Bad:
        request_id = self._id()
        choice = self.rng.randrange(12)
        data: Any = _valid_window(self.rng)
        shape: Any
        if choice == 0:
            shape = [6]  # ([1, 6] is valid: one feature implied)
        elif choice == 1:
            shape = [1, 6, 1, 1]
        elif choice == 2:
            shape, data = [1, 5, 1], data[:5]  # wrong window length for the model
        elif choice == 3:
            shape, data = [1, 3, 2], data  # two features, the model has one
        elif choice == 4:
            shape = [2, 6, 1]  # 6 values for 12
        elif choice == 5:
            shape = ["1", 6, 1]
        elif choice == 6:
            shape = [True, 6, 1]
        elif choice == 7:
            shape = [-1, 6, 1]
        elif choice == 8:
            shape = [1.0, 6, 1]
        elif choice == 9:
            shape = None
        elif choice == 10:
            shape, data = [1, 5000, 1], [1.0] * 5000
        else:
            shape = "1x6x1"
        return Bad(
            "wrong_shape",
            FUZZ_REQUESTS,
            _request(request_id, shape, data),
            request_id,
            "invalid_window",
            _responses("fuzz"),
        )

    def wrong_types(self) -> Bad:
        request_id = self._id()
        window = _valid_window(self.rng)
        choice = self.rng.randrange(8)
        data: Any
        if choice == 0:
            data = "1,2,3,4,5,6"
        elif choice == 1:
            data = {"0": 1.0}
        elif choice == 2:
            data = [[v] for v in window]  # nested as [6, 1], but the shape is [1, 6, 1]
        elif choice == 3:
            data = [*window[:5], "abc"]
        elif choice == 4:
            data = [*window[:5], None]
        elif choice == 5:
            data = [*window[:5], [1.0, 2.0]]
        elif choice == 6:
            data = [*window[:5], {"v": 1}]
        else:
            data = None
        if choice == 7 and self.rng.random() < 0.5:
            payload = _request(request_id, [1, 6, 1], window)
            body = orjson.loads(payload)
            datatype = self.rng.choice(["INT8", "BYTES", "", 5, None])
            body["inputs"][0]["datatype"] = datatype
            payload = orjson.dumps(body)
            if not isinstance(datatype, str):  # the specification's datatype is a string
                return Bad("wrong_types", FUZZ_REQUESTS, payload, request_id, "invalid_request", _responses("fuzz"))
        else:
            payload = _request(request_id, [1, 6, 1], data)
        return Bad("wrong_types", FUZZ_REQUESTS, payload, request_id, "invalid_window", _responses("fuzz"))

    def non_finite(self) -> Bad:
        request_id = self._id()
        window: list[Any] = list(_valid_window(self.rng))
        window[self.rng.randrange(6)] = self.rng.choice([1e39, -1e39, 3.5e38, "NaN", "nan", "Infinity", "-inf", "1e39"])
        return Bad(
            "non_finite",
            FUZZ_REQUESTS,
            _request(request_id, [1, 6, 1], window),
            request_id,
            "invalid_window",
            _responses("fuzz"),
        )

    def batch_size(self) -> Bad:
        request_id = self._id()
        if self.rng.random() < 0.5:
            return Bad(
                "empty_batch",
                FUZZ_REQUESTS,
                _request(request_id, [0, 6, 1], []),
                request_id,
                "invalid_window",
                _responses("fuzz"),
            )
        batch = self.rng.randint(MAX_WINDOWS + 1, 4 * MAX_WINDOWS)
        payload = _request(request_id, [batch, 6, 1], [10.0] * (batch * 6))
        return Bad("oversized_batch", FUZZ_REQUESTS, payload, request_id, "too_large", _responses("fuzz"))

    def bad_structure(self) -> Bad:
        request_id = self._id()
        window = _valid_window(self.rng)
        tensor = {"name": "window", "shape": [1, 6, 1], "datatype": "FP32", "data": window}
        choice = self.rng.randrange(6)
        body: Any
        if choice == 0:
            body = {"id": request_id}
        elif choice == 1:
            body = {"id": request_id, "inputs": tensor}
        elif choice == 2:
            body = {"id": request_id, "inputs": [tensor, tensor]}
        elif choice == 3:
            body = {"id": request_id, "inputs": []}
        elif choice == 4:
            body = {"id": request_id, "inputs": [5]}
        else:
            body = [request_id, tensor]
            return Bad("bad_structure", FUZZ_REQUESTS, orjson.dumps(body), None, "invalid_request", _responses("fuzz"))
        return Bad(
            "bad_structure", FUZZ_REQUESTS, orjson.dumps(body), request_id, "invalid_request", _responses("fuzz")
        )

    def bad_id(self) -> Bad:
        tensor = {"shape": [1, 6, 1], "data": _valid_window(self.rng)}
        request_id = self.rng.choice([None, "x" * 257, {"a": 1}, [1], True, 1.5])
        body: dict[str, Any] = {"inputs": [tensor]}
        if request_id is not None or self.rng.random() < 0.5:
            body["id"] = request_id
        return Bad("bad_id", FUZZ_REQUESTS, orjson.dumps(body), None, "invalid_request", _responses("fuzz"))

    # -- routing faults: valid payloads on topics that name no service for this tenant
    def route_errors(self) -> Bad:
        request_id = self._id()
        payload = _request(request_id, [1, 6, 1], _valid_window(self.rng))
        choice = self.rng.randrange(4)
        if choice == 0:
            model = self.rng.choice(["gru", "lstm2", "transformer"])
            topic = f"tenants/fuzz/models/{model}/requests"
            return Bad("unknown_model", topic, payload, request_id, "unknown_model", _responses("fuzz", model))
        if choice == 1:
            return Bad(
                "model_not_allowed",
                "tenants/fuzz/models/ann/requests",
                payload,
                request_id,
                "model_not_allowed",
                _responses("fuzz", "ann"),
            )
        if choice == 2:
            tenant = self.rng.choice(["ghost", "ghost-2", "nobody_3"])
            topic = f"tenants/{tenant}/models/lstm/requests"
            return Bad("unknown_tenant", topic, payload, request_id, "unknown_tenant", _responses(tenant))
        # v5 response topic pointing at another tenant, or a filter: ignored, answer on our own topic.
        # (MQTT forbids wildcards in a ResponseTopic; Mosquitto would drop the connection.)
        response_topic = self.rng.choice(
            ["tenants/good/models/lstm/responses", "tenants/good/errors", "tenants/fuzzy/inbox", "x/y"]
        )
        bad = Bad(
            "foreign_response_topic",
            FUZZ_REQUESTS,
            _request(request_id, [1, 5, 1], [1.0] * 5),
            request_id,
            "invalid_window",
            _responses("fuzz"),
            response_topic,
        )
        return bad

    def odd_topics(self) -> Bad:
        request_id = self._id()
        payload = _request(request_id, [1, 6, 1], _valid_window(self.rng))
        # Tenant segment not a valid name: nobody to answer, the worker drops the message.
        dropped = ["Fuzz", "fu zz", "ü", "", "-fuzz", "x" * 64, "fuzz.x", "FUZZ", "fu\u200bzz", "fuzz$"]
        # Tenant valid, model segment not a valid name: invalid_request on the tenant's errors topic.
        errors = ["LSTM", "", "a.b", "m" * 64, "lstm ", "ü", "-x"]
        if self.rng.random() < 0.5:
            tenant = self.rng.choice(dropped)
            return Bad("odd_tenant_topic", f"tenants/{tenant}/models/lstm/requests", payload, request_id, None, None)
        model = self.rng.choice(errors)
        return Bad(
            "odd_model_topic",
            f"tenants/fuzz/models/{model}/requests",
            payload,
            request_id,
            "invalid_request",
            "tenants/fuzz/errors",
        )


def _responses(tenant: str, model: str = "lstm") -> str:
    return f"tenants/{tenant}/models/{model}/responses"


def test_wildcards_cannot_be_published() -> None:
    """MQTT forbids wildcards in PUBLISH topics; paho refuses before anything is sent."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wildcard-check")
    for topic in ["tenants/+/models/lstm/requests", "tenants/fuzz/models/#", "tenants/#", "+", "#"]:
        with pytest.raises(ValueError):
            client.publish(topic, b"{}", qos=1)


def test_fuzz_ten_thousand_bad_payloads_with_valid_traffic_alongside(
    serving: ServingSetup, record_property: Callable[[str, object], None]
) -> None:
    tenants = {"good": {"models": ["lstm"]}, "fuzz": {"models": ["lstm"]}}
    generator = Generator(SEED)
    bads = [generator.make() for _ in range(BAD_COUNT)]
    rng = np.random.default_rng(SEED)
    good_windows = {
        f"good-{i:05d}": windows_from_sample(int(rng.integers(1, 5)), seed=i) for i in range(BAD_COUNT // GOOD_EVERY)
    }
    good_payloads = {
        request_id: orjson.dumps(
            {
                "id": request_id,
                "inputs": [{"name": "w", "shape": list(w.shape), "datatype": "FP32", "data": w.ravel().tolist()}],
            }
        )
        for request_id, w in good_windows.items()
    }
    good_ids = list(good_payloads)
    lstm = load_model_version(serving.repository / "lstm" / "1")

    worker = serving.worker(
        "fuzz-test-worker", tenants=tenants, max_message_bytes=MAX_MESSAGE_BYTES, max_windows_per_message=MAX_WINDOWS
    )
    observer_filters = ["tenants/+/models/+/responses", "tenants/+/errors"]
    with (
        worker,
        serving.tenant("observer", subscribe=observer_filters) as observer,
        serving.tenant("good") as good,
        serving.tenant("fuzz", subscribe=["fuzz/none"]) as fuzzer,
    ):
        # Warm-up: 200 valid requests, then the RSS reference.
        observer_start = observer.total_received
        warm = [(f"warm-{i:05d}", good_payloads[good_ids[i]].replace(b'"good-', b'"warm-', 1)) for i in range(200)]
        for request_id, payload in warm:
            good.send("tenants/good/models/lstm/requests", request_id, payload)
        assert not good.wait_answers([r for r, _ in warm], timeout=30)
        # The observer too has seen every warm-up answer: it counts what is in flight below.
        assert observer.wait_total(observer_start + len(warm), timeout=30) >= observer_start + len(warm)
        rss_after_warmup = worker.rss()
        observer_before = observer.total_received
        sent_answerable = 0
        peak_in_flight = 0

        def wait_for_room() -> None:
            """Block until fewer than MAX_IN_FLIGHT answerable requests are unanswered."""
            nonlocal peak_in_flight
            in_flight = sent_answerable - (observer.total_received - observer_before)
            peak_in_flight = max(peak_in_flight, in_flight)
            if in_flight < MAX_IN_FLIGHT:
                return
            needed = observer_before + sent_answerable - MAX_IN_FLIGHT + 1
            got = observer.wait_total(needed, timeout=STALL_S)
            assert got >= needed, (
                f"no progress for {STALL_S:.0f} s with {sent_answerable - (got - observer_before)} requests "
                f"unanswered\n{worker.log_tail()}"
            )

        started = time.monotonic()
        next_good = 0
        schedule = len(bads) + len(good_ids)
        bad_iter = iter(bads)
        for n in paced(schedule, PUBLISH_RATE):
            wait_for_room()
            if n % (GOOD_EVERY + 1) == GOOD_EVERY and next_good < len(good_ids):
                request_id = good_ids[next_good]
                next_good += 1
                good.send("tenants/good/models/lstm/requests", request_id, good_payloads[request_id])
                sent_answerable += 1
                continue
            bad = next(bad_iter, None)
            if bad is None:
                continue
            properties = None
            if bad.response_topic is not None:
                properties = Properties(PacketTypes.PUBLISH)
                properties.ResponseTopic = bad.response_topic
            fuzzer.send(bad.topic, bad.request_id or f"anon-{n}", bad.payload, properties)
            sent_answerable += bad.reply_topic is not None
        for request_id in good_ids[next_good:]:
            wait_for_room()
            good.send("tenants/good/models/lstm/requests", request_id, good_payloads[request_id])
            sent_answerable += 1
        publish_s = time.monotonic() - started
        assert fuzzer.wait_acked(60) and good.wait_acked(60), "the broker did not acknowledge everything"

        answerable = [b for b in bads if b.reply_topic is not None]
        expected_total = len(answerable) + len(good_ids)
        got_total = observer.wait_total(observer_before + expected_total, timeout=60) - observer_before
        observer.quiet_for(1.0, timeout=15)
        missing_good = good.wait_answers(good_ids, timeout=5)
        elapsed_s = time.monotonic() - started
        assert worker.is_running(), worker.log_tail()
        worker.wait_ready(5)
        metrics = worker.metrics()
        rss_end = worker.rss()
        # (a late warm-up answer may reach the observer after the reference count)
        late = observer.messages[observer_before:]
        raw = [(m.topic, m.payload) for m in late if not m.payload.startswith(b'{"id":"warm-')]

    # -- valid traffic: exactly once, correct
    assert not missing_good, f"{len(missing_good)} valid requests unanswered, e.g. {sorted(missing_good)[:5]}"
    good_answers = good.snapshot()
    wrong = []
    for request_id in good_ids:
        answers = good_answers[request_id]
        assert len(answers) == 1, f"{request_id} answered {len(answers)} times"
        body = answers[0].body
        assert answers[0].topic == "tenants/good/models/lstm/responses"
        if "error" in body:
            wrong.append((request_id, body["error"]))
            continue
        got = np.array(body["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(got, lstm.predict(good_windows[request_id]).ravel(), atol=1e-5, rtol=0)
    assert not wrong, f"valid requests answered with errors: {wrong[:5]}"

    # -- bad traffic: one structured error each, on the right topic, with the right code
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, payload in raw:
        body = orjson.loads(payload)
        by_topic[topic].append(body)
    for topic, bodies in by_topic.items():
        if topic.startswith("tenants/good/"):
            assert all(str(b.get("id")).startswith(("good-", "warm-")) for b in bodies), (
                f"a fuzz answer landed on tenant good's topic {topic}"
            )
            continue
        for body in bodies:
            assert set(body) <= {"id", "error", "parameters"} and set(body["parameters"]) == {"code"}, body
            assert "id" not in body or isinstance(body["id"], str), "an absent id is omitted, never null"
            assert body["parameters"]["code"] in ERROR_CODES and isinstance(body["error"], str), body
            assert body["error"], body
    answers_by_id: dict[str, list[tuple[str, str]]] = defaultdict(list)
    anonymous: Counter[tuple[str, str]] = Counter()
    for topic, bodies in by_topic.items():
        if topic.startswith("tenants/good/"):
            continue
        for body in bodies:
            if "id" not in body:
                anonymous[(topic, body["parameters"]["code"])] += 1
            else:
                answers_by_id[str(body["id"])].append((topic, body["parameters"]["code"]))
    mismatches = []
    expected_anonymous: Counter[tuple[str, str]] = Counter()
    for bad in answerable:
        if bad.request_id is None:
            expected_anonymous[(bad.reply_topic or "", bad.code or "")] += 1
            continue
        answered = answers_by_id.get(bad.request_id, [])
        if answered != [(bad.reply_topic, bad.code)]:
            mismatches.append((bad.category, bad.request_id, bad.payload[:120], answered, (bad.reply_topic, bad.code)))
    dropped_expected = sum(1 for b in bads if b.reply_topic is None)
    unexpected_ids = set(answers_by_id) - {b.request_id for b in answerable if b.request_id}

    categories = Counter(b.category for b in bads)
    codes = Counter(
        b["parameters"]["code"] for t, bs in by_topic.items() if not t.startswith("tenants/good/") for b in bs
    )
    figures = {
        "bad_messages": len(bads),
        "valid_messages": len(good_ids),
        "categories": dict(categories),
        "answered_bad": len(raw) - len(good_ids),
        "dropped_expected": dropped_expected,
        "dropped_by_worker": sum_samples(metrics, "inference_dropped_messages_total"),
        "error_codes": dict(codes),
        "publish_s": round(publish_s, 1),
        "all_answered_s": round(elapsed_s, 1),
        "rss_after_warmup_mib": round(rss_after_warmup / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1),
        "observer_total": got_total,
        "peak_in_flight": peak_in_flight,  # bounded by MAX_IN_FLIGHT
    }
    for key, value in figures.items():
        record_property(key, value)
    print(f"\nfuzz figures: {figures}")
    assert not mismatches, f"{len(mismatches)} bad messages answered wrongly, e.g. {mismatches[:5]}"
    assert anonymous == expected_anonymous, (
        f"id-less errors per (topic, code): got {dict(anonymous)}, expected {dict(expected_anonymous)}"
    )
    assert not unexpected_ids, f"answers for ids never sent as bad: {sorted(unexpected_ids)[:5]}"
    assert figures["dropped_by_worker"] == dropped_expected
    assert len(raw) == expected_total, f"{len(raw)} answers for {expected_total} answerable messages"
    assert rss_end - rss_after_warmup < RSS_GROWTH_LIMIT
