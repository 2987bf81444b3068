"""Observability and saturation autoscaling manifests, the Grafana dashboard, the Prometheus
config (issue 15).

- deployment/overlays/observability and deployment/overlays/keda build with `kubectl
  kustomize`; every built manifest validates against the Kubernetes 1.30 and 1.37 schemas
  (kubernetes-validate, strict), except the KEDA ScaledObject, a CRD kind, which validates
  with @kubernetes-models/keda (validators generated from KEDA's CRD schemas; installed by
  .ci/run into scripts/node-checks) plus an unknown-field check against the same package's
  type declarations.
- The dashboard JSON has the structure Grafana's dashboard schema requires (uid, title,
  schemaVersion, panels with unique ids, gridPos inside 24 columns, Prometheus targets with
  refId and expr), and every PromQL expression in it, in the ScaledObject and in the alert
  rules names a metric that a real worker's /metrics exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from server_app.broker_stats import BROKER_METRICS, LAST_UPDATE_METRIC
from tests.deployment.manifests import (
    DEPLOYMENT,
    Manifest,
    built_manifests,
    containers,
    extract_file,
    find_manifest,
    find_manifests,
    pod_spec,
    workloads,
)

OBSERVABILITY = DEPLOYMENT / "overlays" / "observability"
KEDA = DEPLOYMENT / "overlays" / "keda"
OVERLAYS = {"observability": OBSERVABILITY, "keda": KEDA}
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "mqtt-inference.json"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
NODE_CHECKS = Path(__file__).resolve().parents[2] / "scripts" / "node-checks"
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "mqtt-inference"
CRD_KINDS = {"ScaledObject"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
}


# --------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name", list(OVERLAYS))
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_built_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    problems = []
    for manifest in built_manifests(OVERLAYS[name]):
        if manifest["kind"] in CRD_KINDS:
            continue  # validated below against the KEDA CRD schema
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


def _keda_errors(objects: list[Manifest]) -> list[list[str]]:
    node = shutil.which("node")
    assert node, "node not found: .ci/run installs Node.js and runs npm ci in scripts/node-checks"
    assert (NODE_CHECKS / "node_modules" / "@kubernetes-models" / "keda").is_dir(), (
        "@kubernetes-models/keda is not installed: "
        "`npm ci --ignore-scripts --prefix scripts/node-checks` (.ci/run does)"
    )
    result = subprocess.run([node, "validate-scaledobject.mjs"], cwd=NODE_CHECKS, input=json.dumps(objects),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors: list[list[str]] = json.loads(result.stdout.strip().splitlines()[-1])["errors"]
    return errors


def _declared_fields(type_name: str) -> set[str]:
    """Property names of `I<type_name>` in @kubernetes-models/keda's type declarations."""
    path = NODE_CHECKS / "node_modules" / "@kubernetes-models" / "keda" / "keda.sh" / "v1alpha1" / f"{type_name}.d.ts"
    text = path.read_text(encoding="utf-8")
    body = re.search(r"export interface I" + type_name + r" \{(.*?)\n\}", text, re.S)
    assert body, f"no interface I{type_name} in {path}"
    return set(re.findall(r'^\s+"([A-Za-z]+)"\??:', body.group(1), re.M))


def test_the_scaled_object_is_valid_against_the_keda_crd() -> None:
    (scaled,) = find_manifests(built_manifests(KEDA), "ScaledObject")
    assert _keda_errors([scaled]) == []
    # Unknown fields: CRD validators accept them (Kubernetes prunes them silently); refuse them here.
    assert set(scaled["spec"]) <= _declared_fields("ScaledObjectSpec"), sorted(scaled["spec"])
    for trigger in scaled["spec"]["triggers"]:
        assert set(trigger) <= _declared_fields("ScaleTriggers"), sorted(trigger)


def test_the_keda_validator_is_not_vacuous() -> None:
    (scaled,) = find_manifests(built_manifests(KEDA), "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "two"
    scaled["spec"]["triggers"][0]["metadata"]["query"] = 42
    assert len(_keda_errors([scaled])) == 1
    assert "maxReplicaCont" not in _declared_fields("ScaledObjectSpec")


@pytest.mark.parametrize("name", list(OVERLAYS))
def test_everything_lives_in_the_service_namespace_and_references_resolve(name: str) -> None:
    manifests = built_manifests(OVERLAYS[name])
    available = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"].get("namespace") == NAMESPACE, manifest["metadata"]["name"]
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in available, volume
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in available, volume
        for container in containers(workload):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ("Secret", ref["name"]) in available, ref
        account = spec.get("serviceAccountName")
        if account:
            assert ("ServiceAccount", account) in available


def test_prometheus_and_grafana_run_locked_down() -> None:
    manifests = built_manifests(OBSERVABILITY)
    for name in ("prometheus", "grafana"):
        workload = find_manifest(manifests, "Deployment", name)
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        # Prometheus reads the API for pod discovery (a Role on pods in this namespace only).
        assert spec.get("automountServiceAccountToken") is (name == "prometheus")
        for container in containers(workload):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
            assert ":" in container["image"] and not container["image"].endswith(":latest")
    role = find_manifest(manifests, "Role", "prometheus")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    assert not find_manifests(manifests, "ClusterRole")


def test_services_select_pods_with_named_ports() -> None:
    manifests = built_manifests(OBSERVABILITY)
    for service in find_manifests(manifests, "Service"):
        selector = service["spec"]["selector"]
        selected = [w for w in workloads(manifests)
                    if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert selected, service["metadata"]["name"]
        ports = {p["name"] for w in selected for c in containers(w, init=False) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str):
                assert port["targetPort"] in ports


def test_the_workers_admit_this_prometheus_and_it_scrapes_their_health_port() -> None:
    manifests = built_manifests(OBSERVABILITY)
    policy = find_manifest(manifests, "NetworkPolicy", "inference-health")
    prometheus = find_manifest(manifests, "Deployment", "prometheus")
    labels = prometheus["spec"]["template"]["metadata"]["labels"]
    admitted = [
        p for p in policy["spec"]["ingress"][0]["from"]
        if "namespaceSelector" not in p and p["podSelector"]["matchLabels"].items() <= labels.items()
    ]
    assert admitted, "NetworkPolicy inference-health does not admit the overlay's Prometheus"
    config = yaml.safe_load(extract_file(manifests, "ConfigMap", "prometheus-config", "prometheus.yml"))
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mqtt-inference"]
    port_rule = ["__meta_kubernetes_pod_container_port_name"]
    keep_port = [r for r in job["relabel_configs"] if r.get("source_labels") == port_rule]
    worker = find_manifest(manifests, "StatefulSet", "inference")
    port_names = {p["name"] for c in containers(worker, init=False) for p in c.get("ports", [])}
    assert keep_port and keep_port[0]["regex"] in port_names
    assert {r.get("target_label") for r in job["relabel_configs"]} >= {"namespace", "pod"}
    # the alert rules of the base are mounted where rule_files looks
    mounts = {m["name"]: m["mountPath"] for c in containers(prometheus) for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(prometheus)["volumes"]}
    rules = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "inference-alerts"]
    assert rules and config["rule_files"] == [mounts[rules[0]] + "/*.yaml"]


def test_saturation_autoscaling_replaces_the_cpu_autoscaler() -> None:
    keda = built_manifests(KEDA)
    assert not find_manifests(keda, "HorizontalPodAutoscaler"), "two autoscalers on one StatefulSet would fight"
    assert find_manifest(built_manifests(OBSERVABILITY), "HorizontalPodAutoscaler", "inference")
    (scaled,) = find_manifests(keda, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert find_manifest(keda, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"saturation", "backlog"}
    assert "inference_loop_busy_seconds_total" in triggers["saturation"]["metadata"]["query"]
    assert 0 < float(triggers["saturation"]["metadata"]["threshold"]) < 1
    service = find_manifest(keda, "Service", "prometheus")
    for trigger in triggers.values():
        assert trigger["metricType"] == "AverageValue"
        assert trigger["metadata"]["serverAddress"] == f"http://prometheus.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    pdb = find_manifest(keda, "PodDisruptionBudget", "inference")
    assert pdb["spec"]["minAvailable"] < scaled["spec"]["minReplicaCount"]


# --------------------------------------------------------------------------- dashboard and queries


def test_the_dashboard_has_grafanas_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"])
        titles.append(panel["title"].lower())
    for wanted in ("answers/s", "errors/s", "duration", "saturation", "queue depth", "reload", "broker", "skill"):
        assert any(wanted in title for title in titles), f"no panel about {wanted}"
    # the overlay provisions exactly this file
    provisioned = extract_file(built_manifests(OBSERVABILITY), "ConfigMap", "grafana-dashboards", "mqtt-inference.json")
    assert json.loads(provisioned) == dashboard


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names (inside {} or by/without/on/ignoring lists) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if following.startswith("(") or word in PROMQL_WORDS or word.startswith("$"):
            continue
        if text[max(0, match.start() - 1)] == "$":
            continue
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, tenant) (rate(a_bucket{tenant=~"$tenant"}[$__rate_interval]))) / b'
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("max by (namespace) (increase(mqtt_broker_messages_dropped[5m])) > 0") == {
        "mqtt_broker_messages_dropped"
    }


@pytest.fixture(scope="module")
def exported_series() -> Iterator[set[str]]:
    """Series names on a real worker's /metrics (Mosquitto, health port), plus the mqtt_broker_*
    gauges its $SYS reader exports once the broker's first $SYS message arrives."""
    from tests.support.configs import copy_model_repository, server_config_dict
    from tests.support.mosquitto import MosquittoBroker, find_mosquitto
    from tests.support.ports import LOCALHOST, free_port
    from tests.support.workers import running_worker

    find_mosquitto()
    work = Path(__import__("tempfile").mkdtemp(prefix="observability-"))
    broker = MosquittoBroker(work / "mosquitto")
    broker.start()
    try:
        port = free_port()
        config = server_config_dict(broker.host, broker.port, copy_model_repository(work / "models"),
                                    shared_group="inference", protocol="5")  # fmt: skip
        config["health"] = {"host": LOCALHOST, "port": port}
        with running_worker(config), urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    series: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            series.add(family.name + "_total")
        elif family.type == "histogram":
            series |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            series.add(family.name)
    assert "inference_loop_busy_seconds_total" in series
    yield series | {name for name, _ in BROKER_METRICS.values()} | {LAST_UPDATE_METRIC}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return [re.sub(r"label_values\((\w+),\s*\w+\)", r"\1", e) for e in exprs]


def _keda_exprs() -> list[str]:
    (scaled,) = find_manifests(built_manifests(KEDA), "ScaledObject")
    return [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]


def _alert_exprs() -> list[str]:
    text = extract_file(built_manifests(OBSERVABILITY), "ConfigMap", "inference-alerts", "alerts.yaml")
    return [rule["expr"] for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


@pytest.mark.integration
@pytest.mark.parametrize("source", ["dashboard", "keda", "alerts"])
def test_every_query_names_an_exported_metric(source: str, exported_series: set[str]) -> None:
    exprs = {"dashboard": _dashboard_exprs, "keda": _keda_exprs, "alerts": _alert_exprs}[source]()
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - exported_series
        assert not missing, f"{source}: {expr!r} names {sorted(missing)}, not exported by a worker"
