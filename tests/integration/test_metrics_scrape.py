"""/metrics of a real worker under load, against a real Mosquitto, and the README's metric table (issue 15).

- Names, types and label sets on /metrics are exactly those of the table in the README's
  "Observability" section (both directions: nothing undocumented, nothing documented missing).
- Every histogram's count equals the answers the tenants received, counted by id:
  request duration per (tenant, model) = all answers; queue duration = answers that reached a
  micro-batch (all of them here); compute duration per (model, version) = forecast answers;
  ``inference_answers_total`` per (tenant, model, code) = answers by code.
- A scrape in the middle of the load parses and never exceeds the final counts.

No timing is asserted: the load is a fixed number of requests, every wait is for a condition.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server_app.broker_stats import BROKER_METRICS, LAST_UPDATE_METRIC
from tests.support.configs import REPO_ROOT, copy_model_repository, server_config_dict
from tests.support.mosquitto import MosquittoBroker, find_mosquitto
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.ports import LOCALHOST, free_port
from tests.support.probe import MqttProbe
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration

README = REPO_ROOT / "README.md"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def documented_metrics(readme: Path = README) -> dict[str, tuple[str, frozenset[str]]]:
    """The README's metric table: exposition name -> (type, label names)."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Observability\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, tuple[str, frozenset[str]]] = {}
    for line in section.splitlines():
        match = re.match(r"\| `([a-z_:][a-z0-9_:]*)` \| (counter|gauge|histogram) \|\s*([a-z_, ]*?)\s*\|", line)
        if match:
            labels = frozenset(label.strip() for label in match.group(3).split(",") if label.strip())
            table[match.group(1)] = (match.group(2), labels)
    assert table, "no metric table in the README's Observability section"
    return table


def family_name(documented: str, kind: str) -> str:
    """The parser's family name: counters without `_total`."""
    return documented.removesuffix("_total") if kind == "counter" else documented


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


Families = dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]


def parse(text: str) -> Families:
    return {
        f.name: (f.type, [(s.name, dict(s.labels), float(s.value)) for s in f.samples])
        for f in text_string_to_metric_families(text)
    }


def total(families: Families, sample_name: str, family: str, **labels: str) -> float:
    if family not in families:
        return 0.0
    return sum(
        value
        for name, got, value in families[family][1]
        if name == sample_name and all(got.get(k) == v for k, v in labels.items())
    )


def test_the_table_documents_the_broker_metrics_the_code_exports() -> None:
    table = documented_metrics()
    broker = {name for name in table if name.startswith("mqtt_broker_")}
    assert broker == {name for name, _ in BROKER_METRICS.values()} | {LAST_UPDATE_METRIC}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    find_mosquitto()  # CI installs mosquitto: missing is an error, never a skip
    server = MosquittoBroker(tmp_path / "mosquitto")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _config(broker: MosquittoBroker, repository: Path, health_port: int) -> dict[str, Any]:
    config = server_config_dict(broker.host, broker.port, repository, shared_group="inference", protocol="5")
    config["health"] = {"host": LOCALHOST, "port": health_port}
    return config


# (tenant, model, windows per message, well-formed?) and how many requests of each
LOAD: list[tuple[tuple[str, str, int, bool], int]] = [
    (("acme", "lstm", 1, True), 120),
    (("acme", "lstm", 8, True), 30),
    (("acme", "ann", 1, True), 60),
    (("beta", "ann", 4, True), 50),
    (("acme", "lstm", 1, False), 20),  # wrong window length: invalid_window
    (("beta", "lstm", 1, True), 20),  # beta may not use lstm: model_not_allowed
]


def test_metrics_under_load_match_the_table_and_the_answers(broker: MosquittoBroker, tmp_path: Path) -> None:
    repository = copy_model_repository(tmp_path / "models")
    port = free_port()
    table = documented_metrics()
    requests: list[tuple[str, str, str, bytes]] = []
    for (tenant, model, windows, valid), count in LOAD:
        for n in range(count):
            request_id = f"{tenant}-{model}-{windows}-{valid}-{n}"
            data = windows_from_sample(windows, length=6 if valid else 5, seed=n)
            requests.append((tenant, model, request_id, oip_request(request_id, data)))
    requests = requests[::2] + requests[1::2]  # interleave the kinds
    mid_scrapes: list[str] = []

    with (
        running_worker(_config(broker, repository, port)) as worker,
        MqttProbe(broker.host, broker.port, protocol="5").connect() as probe,
    ):
        probe.subscribe(["tenants/+/models/+/responses"])
        for index, (tenant, model, _id, payload) in enumerate(requests):
            probe.publish(f"tenants/{tenant}/models/{model}/requests", payload, wait=False)
            if index == len(requests) // 2:  # a scrape while requests are in flight
                scraper = threading.Thread(target=lambda: mid_scrapes.append(scrape(port)))
                scraper.start()
        scraper.join(30)
        answers = probe.wait_for(len(requests), timeout=60, topic="tenants/+/models/+/responses")
        final = scrape(port)
        worker_version = {name: str(m.version) for (name, _v), m in worker._state.models.items()}  # type: ignore[union-attr]

    # -- every request answered once, by id
    by_id: dict[str, Any] = {}
    for message in answers:
        assert message.request_id not in by_id, f"answered twice: {message.request_id}"
        by_id[str(message.request_id)] = message
    assert set(by_id) == {r[2] for r in requests}
    counted: Counter[tuple[str, str, str]] = Counter()
    for message in answers:
        parts = message.topic.split("/")
        counted[(parts[1], parts[3], message.code)] += 1
    assert counted[("acme", "lstm", "invalid_window")] == 20
    assert counted[("beta", "lstm", "model_not_allowed")] == 20

    families = parse(final)

    # -- names, types and label sets are those of the table, both ways
    for documented, (kind, labels) in table.items():
        if documented.startswith("mqtt_broker_"):
            continue  # present only once $SYS arrived; checked against the code above
        name = family_name(documented, kind)
        assert name in families, f"documented {documented} is not on /metrics"
        assert families[name][0] == kind, f"{documented}: documented {kind}, exported {families[name][0]}"
        for sample, got, _value in families[name][1]:
            assert sample in {documented.removesuffix("_total") + s for s in SUFFIXES[kind]} | {documented}, sample
            assert set(got) - {"le"} == labels, f"{sample}: labels {sorted(got)}, documented {sorted(labels)}"
    for name, (kind, _samples) in families.items():
        exported = name + "_total" if kind == "counter" else name
        assert exported in table, f"/metrics has {exported} ({kind}), the README's table does not"

    # -- histogram counts equal the answers counted by id
    for (tenant, model, code), count in counted.items():
        assert total(families, "inference_answers_total", "inference_answers", tenant=tenant, model=model,
                     code=code) == count, (tenant, model, code)  # fmt: skip
    pairs = {(t, m) for t, m, _c in counted}
    for tenant, model in pairs:
        answered = sum(n for (t, m, _c), n in counted.items() if (t, m) == (tenant, model))
        for histogram in ("inference_request_duration_seconds", "inference_queue_duration_seconds"):
            got = total(families, histogram + "_count", histogram, tenant=tenant, model=model)
            assert got == answered, f"{histogram}{{{tenant},{model}}} count {got}, answers by id {answered}"
    for model in ("lstm", "ann"):
        forecasts = sum(n for (_t, m, c), n in counted.items() if m == model and c == "ok")
        got = total(families, "inference_compute_duration_seconds_count", "inference_compute_duration_seconds",
                    model=model, version=worker_version[model])  # fmt: skip
        assert got == forecasts, f"compute count of {model}: {got}, forecast answers by id {forecasts}"
    windows = sum(w * n for (_t, _m, w, valid), n in LOAD if valid) - 20  # beta/lstm refused
    assert total(families, "inference_windows_total", "inference_windows") == windows
    assert total(families, "inference_batch_windows_sum", "inference_batch_windows") >= windows
    # the loop's clock: busy never exceeds wall time; a loaded worker was busy for some of it
    busy = total(families, "inference_loop_busy_seconds_total", "inference_loop_busy_seconds")
    loop = total(families, "inference_loop_seconds_total", "inference_loop_seconds")
    assert 0 < busy <= loop
    assert total(families, "inference_model_loaded", "inference_model_loaded", model="lstm") == 1
    assert total(families, "inference_model_loads_total", "inference_model_loads", result="loaded") == 2

    # -- the scrape during the load parsed and never exceeds the final counts
    assert mid_scrapes, "the mid-load scrape did not finish"
    middle = parse(mid_scrapes[0])
    for name in ("inference_request_duration_seconds", "inference_compute_duration_seconds"):
        assert total(middle, name + "_count", name) <= total(families, name + "_count", name)
