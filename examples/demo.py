"""`make demo`: embedded broker + shipped models + two tenants streaming for ~20 s, then summaries.

Runs exactly what a user would run by hand (`python -m server_app`, `python -m client_app`),
on free loopback ports so it does not collide with a broker already on 1883.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

ROOT = Path(__file__).resolve().parent.parent
DURATION_S = 20
TENANTS = ("acme", "beta")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited early with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not become ready in time")


def pump(stream: object, prefix: str, summaries: list[str]) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("SUMMARY "):
            summaries.append(line[len("SUMMARY ") :])
        print(f"{prefix}{line}", flush=True)


def service_skills(health_port: int) -> dict[tuple[str, str], float]:
    """The service's live skill per tenant and model, from its /metrics (issue 14)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    skills: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "inference_forecast_skill_ratio":
            for sample in family.samples:
                skills[(sample.labels["tenant"], sample.labels["model"])] = sample.value
    return skills


def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with TemporaryDirectory(prefix="mqtt-inference-demo-") as tmp:
        work = Path(tmp)
        broker_port, health_port = free_port(), free_port()
        server_config = yaml.safe_load((ROOT / "examples" / "server.yaml").read_text())
        server_config["broker"]["port"] = broker_port
        server_config["health"]["port"] = health_port
        for model in server_config["models"].values():
            model["repository"] = str(ROOT / model["repository"])
            model["version"] = 1  # the shipped version, whatever a training run added to models/
        (work / "server.yaml").write_text(yaml.safe_dump(server_config))
        for tenant in TENANTS:
            tenant_config = json.loads((ROOT / "examples" / "tenants" / f"{tenant}.json").read_text())
            tenant_config["broker"]["port"] = broker_port
            tenant_config["broker"]["protocol"] = "3.1.1"  # amqtt speaks 3.1.1 only
            tenant_config["data"] = str(ROOT / tenant_config["data"])
            (work / f"{tenant}.json").write_text(json.dumps(tenant_config))

        print(f"== starting server_app: embedded broker on 127.0.0.1:{broker_port}, shipped models", flush=True)
        server = subprocess.Popen(
            [sys.executable, "-m", "server_app", "--config", str(work / "server.yaml"), "--log-level", "WARNING"],
            cwd=ROOT, env=env,
        )
        try:
            wait_ready(health_port, server)
            print(f"== server ready; streaming two tenants for {DURATION_S} s", flush=True)
            print(f"== live console: http://127.0.0.1:{health_port}/ (open it in a browser while the demo runs)",
                  flush=True)
            clients = {
                tenant: subprocess.Popen(
                    [sys.executable, "-m", "client_app", "--config", str(work / f"{tenant}.json"),
                     "--mode", "stream", "--duration", str(DURATION_S)],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                )
                for tenant in TENANTS
            }
            summaries: list[str] = []
            pumps = [
                threading.Thread(target=pump, args=(process.stdout, f"[{tenant}] ", summaries), daemon=True)
                for tenant, process in clients.items()
            ]
            for thread in pumps:
                thread.start()
            codes = {tenant: process.wait(timeout=DURATION_S + 60) for tenant, process in clients.items()}
            for thread in pumps:
                thread.join(timeout=5)
            skills = service_skills(health_port)
        finally:
            server.terminate()
            server_code = server.wait(timeout=30)

    print("\n== per-tenant summary")
    print(f"{'tenant':8} {'model':6} {'sent':>6} {'answered':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} {'MAE':>8} "
          f"{'skill':>6}")
    for line in summaries:
        s = json.loads(line)
        skill = skills.get((s["tenant"], s["model"]))
        print(
            f"{s['tenant']:8} {s['model']:6} {s['sent']:>6} {s['answered']:>9} {s['errors']:>7} "
            f"{s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['mae']:>8.3f} {'-' if skill is None else f'{skill:.2f}':>6}"
        )
    print("skill: the service's own live score, model MAE / persistence MAE (below 1: better than repeating "
          "the last reading)")
    print(f"server exit code {server_code}; client exit codes {codes}")
    return 0 if server_code == 0 and all(code == 0 for code in codes.values()) and len(summaries) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
