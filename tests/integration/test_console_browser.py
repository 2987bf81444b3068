"""The live console in a real headless browser (Debian's chromium, driven by Playwright).

A worker on a real Mosquitto serves two tenants; the test counts their answers by id, then
loads the page and checks that every number it shows equals the /console.json document the
page rendered (captured from the browser's own request), and that the counts equal the ids
answered. Nothing is timed: the test waits for conditions with generous deadlines.

``CONSOLE_SCREENSHOT=docs/console.png`` also writes the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.support.configs import copy_model_repository, server_config_dict
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, running_worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
DEADLINE_S = 60.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (os.path.exists(CHROMIUM) or shutil.which("chromium")),
        reason="Debian's chromium is not installed (apt-get install chromium; CI installs it)",
    ),
]

# (tenant, model) -> good requests; acme also sends windows of the wrong length (invalid_window).
TRAFFIC = {("acme", "lstm"): 40, ("acme", "ann"): 25, ("beta", "ann"): 30}
BAD_ACME_LSTM = 5


def _send_traffic(probe: MqttProbe) -> dict[tuple[str, str], list[str]]:
    windows = windows_from_sample(64, seed=3)
    sent: dict[tuple[str, str], list[str]] = {}
    for (tenant, model), count in TRAFFIC.items():
        topic = f"tenants/{tenant}/models/{model}/requests"
        for n in range(count):
            request_id = f"{tenant}-{model}-{n}"
            probe.send(topic, request_id, oip_request(request_id, windows[n % 64 : n % 64 + 1]))
            sent.setdefault((tenant, model), []).append(request_id)
    for n in range(BAD_ACME_LSTM):
        request_id = f"acme-lstm-bad-{n}"
        short = np.ones((1, 3, 1), dtype=np.float32)
        probe.send("tenants/acme/models/lstm/requests", request_id, oip_request(request_id, short))
        sent[("acme", "lstm")].append(request_id)
    return sent


def _codes_by_key(probe: MqttProbe, sent: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], dict[str, int]]:
    """From the answers received, by id: how many of each code per tenant and model."""
    answers = probe.snapshot()
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for key, ids in sent.items():
        for request_id in ids:
            (message,) = answers[request_id]  # exactly one answer per id
            body = message.body or {}
            code = body.get("parameters", {}).get("code", "ok") if "error" in body else "ok"
            counts.setdefault(key, {}).setdefault(code, 0)
            counts[key][code] += 1
    return counts


def _fmt(value: float | None, digits: int) -> str:
    return "\u2013" if value is None else f"{value:.{digits}f}"


def test_page_matches_json_and_answers_by_id(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright  # [dev] dependency: missing is an error, not a skip

    config = server_config_dict(
        mosquitto.connect_host, mosquitto.port, copy_model_repository(tmp_path / "models"),
        shared_group="inference", protocol="5",
    )
    config["health"] = {"port": 0}
    with running_worker(config, worker_id="console-test") as worker:
        probe = MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect()
        try:
            probe.subscribe(["tenants/acme/models/+/responses", "tenants/beta/models/+/responses"])
            sent = _send_traffic(probe)
            all_ids = [request_id for ids in sent.values() for request_id in ids]
            assert not probe.wait_answers(all_ids, DEADLINE_S), "requests without an answer"
            by_id = _codes_by_key(probe, sent)
        finally:
            probe.close()
        assert by_id[("acme", "lstm")] == {"ok": 40, "invalid_window": BAD_ACME_LSTM}

        url = f"http://127.0.0.1:{worker.health_port}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda error: problems.append(str(error)))
                foreign: list[str] = []
                page.on("request", lambda r: None if r.url.startswith(url) else foreign.append(r.url))
                with page.expect_response(lambda r: r.url.endswith("/console.json")) as first:
                    page.goto(url + "?interval=60000")  # one fetch: the DOM then shows exactly that document
                document: dict[str, Any] = orjson.loads(first.value.body())
                page.wait_for_function(
                    "g => document.body.getAttribute('data-generated-at') === g", arg=str(document["generated_at"])
                )
                _check_page(page, document, by_id)
                assert not foreign, f"the page fetched from elsewhere: {foreign}"
                assert not problems, f"browser console: {problems}"
                page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
                target = os.environ.get("CONSOLE_SCREENSHOT")
                if target:
                    shutil.copyfile(tmp_path / "console.png", target)
            finally:
                browser.close()


def _check_page(page: Any, document: dict[str, Any], by_id: dict[tuple[str, str], dict[str, int]]) -> None:
    (view,) = document["workers"]
    assert view["worker"] == "console-test" and view["broker"]["connected"] is True
    assert page.text_content("#worker-count") == "1"
    card = page.locator('.worker[data-worker="console-test"]')
    assert card.locator('[data-field="queue_depth"]').text_content() == str(view["queue_depth"])
    assert "connected to" in (card.locator('[data-field="broker"]').text_content() or "")
    shown = 0
    for tenant, models in view["tenants"].items():
        for model, entry in models.items():
            row = page.locator(f'#traffic tr[data-tenant="{tenant}"][data-model="{model}"]')
            cell = lambda field, row=row: row.locator(f'[data-field="{field}"]').text_content()  # noqa: E731
            assert cell("answers") == str(entry["answers"])
            assert cell("ok") == str(entry["ok"])
            assert cell("version") == str(entry["version"])
            assert cell("rate_per_s") == _fmt(entry["rate_per_s"], 1)
            assert cell("p50_ms") == _fmt(entry["p50_ms"], 2)
            assert cell("p99_ms") == _fmt(entry["p99_ms"], 2)
            errors = ", ".join(f"{code} {n}" for code, n in entry["errors"].items()) or "0"
            assert cell("errors") == errors
            # ... and the JSON equals what the tenants received, counted by id
            expected = by_id.get((tenant, model), {})
            assert entry["ok"] == expected.get("ok", 0)
            assert entry["errors"] == {code: n for code, n in expected.items() if code != "ok"}
            if entry["ok"]:
                chart = page.locator(f'[data-chart="{tenant}/{model}"]')
                assert chart.get_attribute("data-points") == str(len(entry["forecasts"]))
                assert chart.locator("canvas").count() == 1
            shown += 1
    assert shown == 3 and page.locator("#traffic tbody tr").count() == 3
    assert {tenant for tenant, _ in by_id} == {"acme", "beta"}


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"worker on health port {port} not ready within {DEADLINE_S:.0f} s")


def test_one_page_shows_every_worker_of_a_supervisor(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """`--workers 2`: each worker's /console.json holds both workers' views (the supervisor
    passes the workers' health ports); the sum over workers equals the answers by id. JSON only:
    the page renders whatever workers the document lists (checked above)."""
    config = server_config_dict(
        mosquitto.connect_host, mosquitto.port, copy_model_repository(tmp_path / "models"),
        shared_group="inference", protocol="5",
    )
    server = ServerProcess.worker(config, tmp_path / "server", worker_id="console-sup")
    server.args = ("--workers", "2")
    assert server.health_port is not None
    with server:
        _wait_ready(server.health_port + 1)  # `with` waited for worker 0
        probe = MqttProbe(mosquitto.connect_host, mosquitto.port, protocol="5").connect()
        try:
            probe.subscribe(["tenants/acme/models/+/responses", "tenants/beta/models/+/responses"])
            sent = _send_traffic(probe)
            all_ids = [request_id for ids in sent.values() for request_id in ids]
            assert not probe.wait_answers(all_ids, DEADLINE_S), "requests without an answer"
            by_id = _codes_by_key(probe, sent)
        finally:
            probe.close()
        for port in (server.health_port, server.health_port + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/console.json", timeout=10) as answer:
                document = orjson.loads(answer.read())
            workers = document["workers"]
            assert sorted(w["worker"] for w in workers) == ["console-sup-0", "console-sup-1"]
            assert document["aggregation"] == "2 workers of one supervisor"
            for key, codes in by_id.items():
                tenant, model = key
                ok = sum(w["tenants"][tenant][model]["ok"] for w in workers)
                errors = sum(w["tenants"][tenant][model]["error_count"] for w in workers)
                assert (ok, errors) == (codes.get("ok", 0), sum(n for c, n in codes.items() if c != "ok"))
