"""Render the Grafana dashboard's panels from a real run: ``python -m benchmarks.render_dashboard``.

Not a Grafana screenshot (Grafana is not installable offline here): every panel of
``deployment/overlays/observability/grafana/dashboards/mqtt-inference.json`` is drawn with
matplotlib from its own PromQL, evaluated by a real Prometheus (``query_range``) that scraped a
real worker every second while real clients loaded it. Everything runs on 127.0.0.1 and stops
at the end:

- Mosquitto (``tests.support.mosquitto.MosquittoBroker``), one worker
  (``python -m server_app --config ...``, a private copy of the shipped models), Prometheus
  (``prometheus --config.file ...``, static target labelled ``namespace=local, pod=worker-0``
  as the scrape config's laptop example says);
- tenants driven by ``python -m client_app`` (each request names its series, time and step,
  so the service scores its forecasts), on a schedule (:data:`SCHEDULE`): acme streams a
  station whose level shifts by +20 half-way (its LSTM's skill moves past 1 and the drift
  detector fires); beta streams steadily, then bursts past its rate limit (``rate_limited``)
  until a config reload raises the limit; a new ``ann`` version is published (a copy of
  version 1: a real hot reload, not a better model); acme floods ``ann`` with no-wait
  requests against a deliberately small inbox (``worker.queue_size`` 200, so some are shed);
  two misconfigured clients send 5-reading windows (``invalid_window``) and a model beta may
  not use (``model_not_allowed``).

Grafana's variables are replaced as Grafana would for this range: ``$tenant`` = All (``.*``),
``$__rate_interval`` = max(interval + scrape interval, 4 x scrape interval) = 4 s with a 1 s
scrape interval and a 1 s step. Needs ``mosquitto`` and ``prometheus`` on the PATH
(``apt-get install mosquitto prometheus``) and matplotlib. Not part of the test suite or CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks.dashboard_drawing import RATE_INTERVAL, SCRAPE_S, STEP_S, draw

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deployment" / "overlays" / "observability" / "grafana" / "dashboards" / "mqtt-inference.json"
OUT = ROOT / "docs" / "dashboard.png"
DATA = ROOT / "data" / "bts_sample.csv"
LOCALHOST = "127.0.0.1"

LOAD_S = 80.0
WARMUP_S = 6.0  # scrapes before the first client
TAIL_S = 8.0  # scrapes after the last client

STATION_A, STATION_B, STATION_C, STATION_D = 1161114002, 1161114004, 1161114005, 1161115001
ACME_RATE = 20.0  # msg/s of acme's stream: window k leaves about k / ACME_RATE s after the start
SHIFT = 20.0
SHIFT_AT_WINDOW = 800  # ~40 s into the run
BETA_LIMIT, BETA_LIMIT_RAISED = 150, 1000  # windows/s


@dataclass
class Client:
    """One ``python -m client_app`` run of the schedule."""

    name: str
    tenant: str
    model: str
    station: int
    args: list[str]
    data: str = "plain"  # "plain" or "shifted"
    window: int = 6


@dataclass
class Event:
    at: float
    label: str
    client: Client | None = None
    action: str | None = None  # "raise-limit", "new-ann-version"


SCHEDULE: list[Event] = [
    Event(0, "acme/lstm streams 20 msg/s (level +20 from window 800, ~40 s)",
          Client("acme-stream", "acme", "lstm", STATION_A, ["--mode", "stream", "--rate", str(ACME_RATE),
                                                          "--duration", str(LOAD_S)], data="shifted")),
    Event(0, "beta/ann streams 10 msg/s",
          Client("beta-stream", "beta", "ann", STATION_A, ["--mode", "stream", "--rate", "10",
                                                          "--duration", str(LOAD_S)])),
    Event(15, "beta/ann bursts 30 msg/s x 8 windows (over its 150 windows/s limit)",
          Client("beta-burst", "beta", "ann", STATION_B, ["--mode", "stream", "--rate", "30", "--batch", "8",
                                                         "--duration", "20"])),
    Event(28, "config reload: beta's limit raised to 1000 windows/s", action="raise-limit"),
    Event(42, "ann version 2 published (a copy of version 1)", action="new-ann-version"),
    Event(50, "acme/ann floods 6000 no-wait requests (inbox of 200)",
          Client("acme-flood", "acme", "ann", STATION_C, ["--mode", "no-wait", "--rate", "0", "--count", "6000"])),
    Event(60, "acme/lstm with 5-reading windows (invalid_window)",
          Client("acme-bad-window", "acme", "lstm", STATION_D, ["--mode", "stream", "--rate", "5",
                                                               "--duration", "10"], window=5)),
    Event(60, "beta/lstm (model_not_allowed)",
          Client("beta-wrong-model", "beta", "lstm", STATION_D, ["--mode", "stream", "--rate", "3",
                                                                "--duration", "10"])),
]


# --------------------------------------------------------------------------- the run


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early with code {process.returncode}")
        try:
            http_get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} not ready within {timeout:.0f} s ({url})")


@contextmanager
def process(args: list[str], log: Path, cwd: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, output to ``log``; SIGTERM (then SIGKILL) at exit."""
    with log.open("wb") as out:
        child = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            yield child
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(timeout=5)


def write_atomically(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text)
    temp.replace(path)


def server_config(broker_port: int, health_port: int, models: Path, beta_limit: int) -> dict[str, Any]:
    return {
        "broker": {"host": LOCALHOST, "port": broker_port, "protocol": "5", "qos": 1, "shared_group": "inference"},
        "models": {name: {"repository": str(models / name), "version": "latest"} for name in ("lstm", "ann")},
        "tenants": {"acme": {"models": ["lstm", "ann"]}, "beta": {"models": ["ann"], "rate_limit_per_s": beta_limit}},
        "worker": {"id": "worker-0", "queue_size": 200},
        "health": {"host": LOCALHOST, "port": health_port},
        "reload": {"poll_interval_s": 1.0},
    }


def shifted_data(target: Path) -> Path:
    """The sample data with acme's station raised by SHIFT from its window SHIFT_AT_WINDOW on
    (on the 300 s grid the client resamples to)."""
    from client_app.data import read_series

    series = read_series(DATA, STATION_A, 122, resample_s=300)
    cutoff = float(series.times[SHIFT_AT_WINDOW + 6])
    data = pd.read_csv(DATA)
    shift = (data["station_id"] == STATION_A) & (data["reading_time"] >= cutoff)
    data.loc[shift, "value"] = data.loc[shift, "value"] + SHIFT
    data.to_csv(target, index=False)
    return target


def client_config(client: Client, broker_port: int, data: dict[str, Path], work: Path) -> Path:
    config = json.loads((ROOT / "examples" / "tenants" / "acme.json").read_text())
    config.update(tenant=client.tenant, model=client.model, station=client.station, window=client.window,
                  data=str(data[client.data]), client_id=f"{client.name}-render")
    config["broker"].update(host=LOCALHOST, port=broker_port, protocol="5")
    path = work / f"{client.name}.json"
    path.write_text(json.dumps(config))
    return path


def publish_version(repository: Path, name: str, version: int) -> None:
    """A copy of version 1 published atomically as ``version`` (temp folder + rename)."""
    temp = repository / name / f".tmp-{version}"
    shutil.copytree(repository / name / "1", temp)
    temp.rename(repository / name / str(version))


@dataclass
class RunResult:
    start: float
    end: float
    events: list[tuple[float, str]] = field(default_factory=list)
    alarms: list[tuple[float, str]] = field(default_factory=list)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    series: dict[int, list[tuple[str, np.ndarray, np.ndarray]]] = field(default_factory=dict)


def worker_alarms(log: Path) -> list[tuple[float, str]]:
    """The worker's "quality alarm" WARNING lines: (Unix time, what)."""
    alarms = []
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*quality alarm: tenant (\S+) model (\S+) "
                         r"version (\d+) \(([^)]*)\)", line)
        if match:
            at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(match.group(2)) / 1000
            alarms.append((at, f"{match.group(3)}/{match.group(4)} v{match.group(5)} ({match.group(6)})"))
    return alarms


def save(result: RunResult, path: Path) -> None:
    series = {str(k): [(name, t.tolist(), v.tolist()) for name, t, v in lines] for k, lines in result.series.items()}
    path.write_text(json.dumps({"start": result.start, "end": result.end, "events": result.events,
                                "alarms": result.alarms, "summaries": result.summaries, "series": series}))


def load(path: Path) -> RunResult:
    raw = json.loads(path.read_text())
    series = {int(k): [(name, np.array(t, dtype=float), np.array(v, dtype=float)) for name, t, v in lines]
              for k, lines in raw["series"].items()}
    return RunResult(raw["start"], raw["end"], [(at, label) for at, label in raw["events"]],
                     [(at, label) for at, label in raw.get("alarms", [])], raw["summaries"], series)


def run_and_query(panels: list[dict[str, Any]], work: Path) -> RunResult:
    from tests.support.mosquitto import MosquittoBroker

    models = work / "models"
    for name in ("lstm", "ann"):
        shutil.copytree(ROOT / "models" / name / "1", models / name / "1",
                        ignore=shutil.ignore_patterns("saved_model", "*.keras", "*.png"))
    data = {"plain": DATA, "shifted": shifted_data(work / "shifted.csv")}
    health_port, prometheus_port = free_port(), free_port()
    prometheus_url = f"http://{LOCALHOST}:{prometheus_port}"

    with ExitStack() as stack:
        broker = MosquittoBroker(work / "mosquitto")
        broker.start()
        stack.callback(broker.stop)
        config_path = work / "server.yaml"
        write_atomically(config_path, yaml.safe_dump(server_config(broker.port, health_port, models, BETA_LIMIT)))
        worker = stack.enter_context(process(
            [sys.executable, "-m", "server_app", "--config", str(config_path), "--log-level", "WARNING"],
            work / "worker.log"))
        wait_http(f"http://{LOCALHOST}:{health_port}/readyz", worker, "the worker")

        (work / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "scrape_configs": [{
                "job_name": "mqtt-inference", "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"{LOCALHOST}:{health_port}"],
                                    "labels": {"namespace": "local", "pod": "worker-0"}}],
            }],
        }))
        prometheus = stack.enter_context(process(
            ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
             f"--web.listen-address={LOCALHOST}:{prometheus_port}", "--log.level=warn"],
            work / "prometheus.log"))
        wait_http(f"{prometheus_url}/-/ready", prometheus, "prometheus")
        start = time.time()
        print(f"worker on :{health_port}, prometheus on :{prometheus_port}; warming up {WARMUP_S:.0f} s", flush=True)
        time.sleep(WARMUP_S)

        result = RunResult(start=start, end=0.0)
        clients: dict[str, subprocess.Popen[bytes]] = {}
        t0 = time.monotonic()
        for event in SCHEDULE:
            delay = event.at - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            result.events.append((time.time(), event.label))
            print(f"+{time.monotonic() - t0:5.1f} s  {event.label}", flush=True)
            if event.client is not None:
                path = client_config(event.client, broker.port, data, work)
                clients[event.client.name] = stack.enter_context(process(
                    [sys.executable, "-m", "client_app", "--config", str(path), "--quiet",
                     "--summary-json", str(work / f"{event.client.name}.summary.json"), *event.client.args],
                    work / f"{event.client.name}.log"))
            elif event.action == "raise-limit":
                write_atomically(config_path, yaml.safe_dump(
                    server_config(broker.port, health_port, models, BETA_LIMIT_RAISED)))
            elif event.action == "new-ann-version":
                publish_version(models, "ann", 2)
        for name, child in clients.items():
            code = child.wait(timeout=LOAD_S + 120)
            summary = work / f"{name}.summary.json"
            result.summaries[name] = json.loads(summary.read_text()) if summary.exists() else {"exit": code}
            result.summaries[name]["exit"] = code
        print(f"+{time.monotonic() - t0:5.1f} s  clients done; {TAIL_S:.0f} s of scrapes more", flush=True)
        time.sleep(TAIL_S)
        result.end = time.time()
        result.alarms = worker_alarms(work / "worker.log")
        for panel in panels:
            result.series[panel["id"]] = query_panel(prometheus_url, panel, result.start, result.end)
    save(result, work / "result.json")
    return result


def promql(expr: str) -> str:
    """The expression as Grafana sends it for this range: $tenant = All, $__rate_interval."""
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$tenant", ".*")


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def query_panel(url: str, panel: dict[str, Any], start: float, end: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    lines: list[tuple[str, np.ndarray, np.ndarray]] = []
    for target in panel.get("targets", []):
        found: list[tuple[str, np.ndarray, np.ndarray]] = []
        query = urllib.parse.urlencode({"query": promql(target["expr"]), "start": f"{start:.3f}",
                                        "end": f"{end:.3f}", "step": f"{STEP_S}s"})
        answer = json.loads(http_get(f"{url}/api/v1/query_range?{query}"))
        if answer.get("status") != "success":
            raise SystemExit(f"panel {panel['id']}: {answer}")
        for item in answer["data"]["result"]:
            values = np.array(item["values"], dtype=object)
            times = values[:, 0].astype(float)
            numbers = np.array([float(v) for v in values[:, 1]])
            found.append((legend(target.get("legendFormat", ""), item["metric"]), times, numbers))
        lines.extend(sorted(found, key=lambda line: line[0]))  # query order, then by name
    return lines


# --------------------------------------------------------------------------- drawing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--keep-workdir", type=Path,
                        help="run in this folder and keep it (configs, logs, TSDB, result.json: the queries' answers)")
    parser.add_argument("--redraw", type=Path, metavar="RESULT_JSON",
                        help="no run: draw again from a kept result.json")
    args = parser.parse_args(argv)
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = dashboard["panels"]
    if args.redraw is not None:
        result = load(args.redraw)
        report(result, panels, draw(panels, result, dashboard["title"], args.out), args.out)
        return 0
    for tool in ("mosquitto", "prometheus"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if args.keep_workdir is not None:
        work = args.keep_workdir
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="render-dashboard-")
        work, cleanup = Path(tmp.name), tmp.cleanup
    try:
        result = run_and_query(panels, work)
        empty = draw(panels, result, dashboard["title"], args.out)
    finally:
        cleanup()
    report(result, panels, empty, args.out)
    return 0


def report(result: RunResult, panels: list[dict[str, Any]], empty: list[int], out: Path) -> None:
    print(f"wrote {out}")
    for name, summary in result.summaries.items():
        print(f"  {name}: exit {summary.get('exit')}, sent {summary.get('sent')}, answered {summary.get('answered')}, "
              f"errors {summary.get('errors_by_code')}, p99 {summary.get('p99_ms')} ms")
    titles = {p["id"]: p["title"] for p in panels}
    for panel_id in empty:
        print(f"  no data: panel {panel_id} {titles[panel_id]!r}")


if __name__ == "__main__":
    sys.exit(main())
