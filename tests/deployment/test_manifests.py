"""Every kustomization builds and every resulting manifest is valid Kubernetes.

Validation is offline, against the OpenAPI-derived JSON schemas shipped with
kubernetes-validate, in strict mode (unknown fields are errors): the oldest and the
newest minor version we claim to support.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.deployment.manifests import (
    BASE,
    DATA_LOADER,
    DEV,
    EMQX,
    KUSTOMIZATIONS,
    MODELS_LOADER,
    TENANT_CLIENT,
    Manifest,
    built_manifests,
    containers,
    find_manifest,
    find_manifests,
    load_manifests,
    pod_spec,
    workloads,
)

# microk8s and kubectl releases this project is deployed with; 1.30 is the oldest
# schema set we validate against, 1.37 the newest kubernetes-validate ships here.
K8S_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "mqtt-inference"


def all_sets() -> dict[str, list[Manifest]]:
    sets = {name: built_manifests(path) for name, path in KUSTOMIZATIONS.items()}
    sets["models-loader"] = load_manifests(MODELS_LOADER)
    sets["data-loader"] = load_manifests(DATA_LOADER)
    return sets


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "models-loader", "data-loader"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    manifests = all_sets()[name]
    assert manifests, f"{name}: the build is empty"
    problems = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


def test_the_validator_is_not_vacuous() -> None:
    """A misspelt field and a wrong type are rejected, so a pass above means something."""
    statefulset = find_manifest(built_manifests(BASE), "StatefulSet", "inference")
    statefulset["spec"]["replica"] = 2  # unknown field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, K8S_VERSIONS[0], strict=True)
    statefulset = find_manifest(built_manifests(BASE), "StatefulSet", "inference")
    statefulset["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "models-loader", "data-loader"])
def test_everything_lives_in_the_service_namespace(name: str) -> None:
    for manifest in all_sets()[name]:
        if manifest["kind"] == "Namespace":
            assert manifest["metadata"]["name"] == NAMESPACE
        else:
            assert manifest["metadata"].get("namespace") == NAMESPACE, manifest["metadata"]["name"]


def _references(spec: dict[str, Any]) -> list[tuple[str, str]]:
    refs: list[tuple[str, str]] = []
    for vol in spec.get("volumes", []):
        if "configMap" in vol:
            refs.append(("ConfigMap", vol["configMap"]["name"]))
        if "secret" in vol:
            refs.append(("Secret", vol["secret"]["secretName"]))
        if "persistentVolumeClaim" in vol:
            refs.append(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]))
    for container in spec.get("initContainers", []) + spec["containers"]:
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                refs.append(("Secret", source["secretKeyRef"]["name"]))
            if "configMapKeyRef" in source:
                refs.append(("ConfigMap", source["configMapKeyRef"]["name"]))
    return refs


@pytest.mark.parametrize("name", list(KUSTOMIZATIONS))
def test_volumes_and_env_refer_to_resources_in_the_same_build(name: str) -> None:
    """Catches typos and generated names (hash suffixes) that kustomize failed to rewrite.

    The example client and the retraining jobs need the base applied first: their
    references may resolve there.
    """
    manifests = built_manifests(KUSTOMIZATIONS[name])
    available = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    if name in ("tenant-client", "retrain"):
        available |= {(m["kind"], m["metadata"]["name"]) for m in built_manifests(BASE)}
    for workload in workloads(manifests):
        volume_claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for kind, ref in _references(pod_spec(workload)):
            assert (kind, ref) in available, (
                f"{workload['kind']}/{workload['metadata']['name']} refers to missing {kind} {ref}"
            )
        for container in containers(workload):
            declared = {v["name"] for v in pod_spec(workload).get("volumes", [])} | volume_claim_templates
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in declared, f"{container['name']} mounts undeclared volume {mount['name']}"


@pytest.mark.parametrize("name", ["base", "dev", "emqx"])
def test_services_select_pods_and_named_ports_exist(name: str) -> None:
    manifests = built_manifests(KUSTOMIZATIONS[name])
    for service in find_manifests(manifests, "Service"):
        selector = service["spec"]["selector"]
        selected = [
            w for w in workloads(manifests) if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pods"
        ports = {p["name"] for w in selected for c in containers(w, init=False) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str):
                assert target in ports, f"Service {service['metadata']['name']}: no container port named {target}"


def test_base_has_broker_workers_autoscaler_and_disruption_budget() -> None:
    manifests = built_manifests(BASE)
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for wanted in [
        ("Namespace", NAMESPACE),
        ("Deployment", "mosquitto"),
        ("Service", "mosquitto"),
        ("PersistentVolumeClaim", "mosquitto-data"),
        ("StatefulSet", "inference"),
        ("PersistentVolumeClaim", "models"),
        ("HorizontalPodAutoscaler", "inference"),
        ("PodDisruptionBudget", "inference"),
    ]:
        assert wanted in kinds, wanted
    for kind, name in [
        ("ConfigMap", "inference-config"),
        ("ConfigMap", "mosquitto-config"),
        ("Secret", "mosquitto-auth"),
        ("Secret", "inference-mqtt"),
    ]:
        find_manifest(manifests, kind, name)
    assert find_manifest(manifests, "StatefulSet", "inference")["spec"]["replicas"] == 2


def test_autoscaler_targets_the_workers_on_cpu() -> None:
    manifests = built_manifests(BASE)
    hpa = find_manifest(manifests, "HorizontalPodAutoscaler", "inference")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    workload = find_manifest(manifests, target["kind"], target["name"])
    assert workload["apiVersion"] == target["apiVersion"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    # Utilisation is relative to the request: every container of the workload needs one.
    for container in containers(workload):
        assert container["resources"]["requests"]["cpu"]


@pytest.mark.parametrize("name", ["base", "dev"])
def test_disruption_budget_covers_the_workers_and_never_blocks_every_drain(name: str) -> None:
    manifests = built_manifests(KUSTOMIZATIONS[name])
    pdb = find_manifest(manifests, "PodDisruptionBudget", "inference")
    workload = find_manifest(manifests, "StatefulSet", "inference")
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = find_manifest(manifests, "HorizontalPodAutoscaler", "inference")
    if "minAvailable" in pdb["spec"]:
        assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never evict a worker"
    else:
        assert pdb["spec"]["maxUnavailable"] >= 1


@pytest.mark.parametrize("name", ["base", "dev", "tenant-client", "retrain", "models-loader", "data-loader"])
def test_pods_run_as_non_root_with_read_only_root_filesystems(name: str) -> None:
    manifests = all_sets()[name]
    for workload in workloads(manifests):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec.get("automountServiceAccountToken") is False
        for container in containers(workload):
            context = container["securityContext"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where


@pytest.mark.parametrize("name", [*KUSTOMIZATIONS, "models-loader", "data-loader"])
def test_containers_have_requests_limits_and_pinned_images(name: str) -> None:
    for workload in workloads(all_sets()[name]):
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert "memory" in resources["limits"], where
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"


def test_dev_overlay_runs_one_small_worker_from_the_dev_image() -> None:
    manifests = built_manifests(DEV)
    workload = find_manifest(manifests, "StatefulSet", "inference")
    assert workload["spec"]["replicas"] == 1
    assert find_manifest(manifests, "HorizontalPodAutoscaler", "inference")["spec"]["minReplicas"] == 1
    assert {c["image"] for c in containers(workload)} == {"mqtt-inference:dev"}


def test_emqx_overlay_replaces_mosquitto() -> None:
    manifests = built_manifests(EMQX)
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert not [n for n in names if "mosquitto" in n[1]], "Mosquitto left in the EMQX overlay"
    find_manifest(manifests, "StatefulSet", "emqx")
    service = find_manifest(manifests, "Service", "emqx")
    assert 1883 in {p["port"] for p in service["spec"]["ports"]}
    assert find_manifest(manifests, "StatefulSet", "inference")


def test_example_client_job_runs_the_tenant_client() -> None:
    job = find_manifest(built_manifests(TENANT_CLIENT), "Job", "tenant-client-acme")
    (container,) = containers(job)
    assert container["command"] == ["python", "-m", "client_app"]
    args = container["args"]
    assert args[args.index("--config") + 1] == "/config/tenant.json"
    assert args[args.index("--mode") + 1] == "stream"
    assert args[args.index("--duration") + 1] == "60"
    assert pod_spec(job)["restartPolicy"] == "Never"
