"""The configs inside the built manifests: server config, mosquitto.conf, the broker's users
and ACLs (dynamic-security plugin file), tenant client config. Each is extracted from the
kustomize output, i.e. exactly what the pods would mount, and checked against what the
mounting pod expects."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from client_app.config import parse_client_config
from provisioning.broker_auth import access_plan, dynsec_document, verify_dynsec_password
from server_app.config import ServerConfig, parse_config
from tests.deployment.manifests import (
    BASE,
    EMQX,
    REPO_ROOT,
    TENANT_CLIENT,
    Manifest,
    built_manifests,
    containers,
    extract_file,
    find_manifest,
    mount_path_of,
    pod_spec,
    volume,
)

WORKER_USER = "inference-worker"
PLACEHOLDER = "CHANGE-ME-{user}"  # the demo passwords; docs/deployment.md says to replace them


def server_config(path: Path = BASE) -> tuple[ServerConfig, str]:
    text = extract_file(built_manifests(path), "ConfigMap", "inference-config", "server.yaml")
    return parse_config(text, "server.yaml"), text


def inference(path: Path = BASE) -> Manifest:
    return find_manifest(built_manifests(path), "StatefulSet", "inference")


def worker_container(workload: Manifest) -> dict[str, Any]:
    return next(c for c in containers(workload, init=False) if c["name"] == "inference")


def secret_file_paths(workload: Manifest, container_name: str) -> dict[str, tuple[str, str]]:
    """Mounted path -> (Secret name, key) for every secret volume of the container."""
    paths: dict[str, tuple[str, str]] = {}
    manifests = built_manifests(BASE) + built_manifests(TENANT_CLIENT)
    for vol in pod_spec(workload).get("volumes", []):
        if "secret" not in vol:
            continue
        mount = mount_path_of(workload, container_name, vol["name"])
        secret = find_manifest(manifests, "Secret", vol["secret"]["secretName"])
        items = vol["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]
        for item in items:
            paths[str(PurePosixPath(mount) / item["path"])] = (secret["metadata"]["name"], item["key"])
    return paths


# -- server config ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [BASE, EMQX], ids=["base", "emqx"])
def test_server_config_validates(path: Path) -> None:
    config, _ = server_config(path)
    assert config.broker.host == ("mosquitto" if path == BASE else "emqx")
    assert config.broker.port == 1883
    assert config.broker.username == WORKER_USER
    assert config.broker.password is None, "the password comes from a Secret file, never the ConfigMap"
    assert config.broker.shared_group == "inference"
    assert config.broker.qos == 1
    assert config.worker.id is None, "worker.id must stay unset: the pod name is the worker id"
    assert set(config.tenants) == {"acme", "beta"}
    assert config.tenants["acme"].models == ["lstm", "ann"]
    assert config.tenants["beta"].models == ["lstm"]


def test_emqx_overlay_server_config_differs_from_base_only_in_broker_host() -> None:
    base = yaml.safe_load(server_config(BASE)[1])
    emqx = yaml.safe_load(server_config(EMQX)[1])
    assert emqx["broker"].pop("host") == "emqx"
    assert base["broker"].pop("host") == "mosquitto"
    assert emqx == base


def test_broker_service_and_port_exist_for_the_workers() -> None:
    config, _ = server_config(BASE)
    service = find_manifest(built_manifests(BASE), "Service", config.broker.host)
    assert config.broker.port in {p["port"] for p in service["spec"]["ports"]}


def test_worker_password_file_is_the_mounted_secret() -> None:
    config, _ = server_config(BASE)
    workload = inference()
    files = secret_file_paths(workload, "inference")
    assert str(config.broker.password_file) in files, f"{config.broker.password_file} is not mounted: {sorted(files)}"
    secret, key = files[str(config.broker.password_file)]
    assert secret.startswith("inference-mqtt")
    password = extract_file(built_manifests(BASE), "Secret", "inference-mqtt", key)
    assert password == PLACEHOLDER.format(user=WORKER_USER)


def test_config_map_is_mounted_as_a_directory_without_hash_so_edits_reach_the_workers() -> None:
    workload = inference()
    container = worker_container(workload)
    config_path = container["args"][container["args"].index("--config") + 1]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    assert PurePosixPath(config_path).parent == PurePosixPath(mount["mountPath"])
    assert volume(workload, "config")["configMap"]["name"] == "inference-config"  # no hash suffix: edit in place
    assert PurePosixPath(config_path).name == "server.yaml"


def test_model_repositories_are_on_the_models_volume() -> None:
    config, _ = server_config(BASE)
    workload = inference()
    models_mount = PurePosixPath(mount_path_of(workload, "inference", "models"))
    assert volume(workload, "models")["persistentVolumeClaim"]["claimName"] == "models"
    for name, model in config.models.items():
        repository = PurePosixPath(str(model.repository))
        assert repository.is_absolute() and repository.parent == models_mount, name
        assert repository.name == name


def test_probes_use_the_health_port_of_the_server_config() -> None:
    config, _ = server_config(BASE)
    container = worker_container(inference())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe_name, path in expected.items():
        get = container[probe_name]["httpGet"]
        assert get["path"] == path, probe_name
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == config.health.port, probe_name


@pytest.mark.parametrize("path", [BASE, EMQX], ids=["base", "emqx"])
def test_health_endpoint_binds_the_pod_address_from_the_downward_api(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_IP", raising=False)
    config, text = server_config(path)
    assert config.health.host_env == "POD_IP"
    assert config.health.host == "127.0.0.1", "without the pod address: loopback, never 0.0.0.0"
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    assert parse_config(text, "server.yaml").health.host == "10.1.2.3"  # where the kubelet probes
    env = {e["name"]: e for e in worker_container(inference(path)).get("env", [])}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize("path", [BASE, EMQX], ids=["base", "emqx"])
def test_network_policy_admits_only_the_scraper_to_the_health_port(path: Path) -> None:
    manifests = built_manifests(path)
    workload = inference(path)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    policies = [
        p for p in manifests
        if p.get("kind") == "NetworkPolicy"
        and p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert [p["metadata"]["name"] for p in policies] == ["inference-health"]
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # the workers' own connections out are not restricted
    (rule,) = policy["spec"]["ingress"]
    # Only the health port (named as in the container), only from the scraper's pods: the
    # kubelet's probes come from the pod's own node, which NetworkPolicy always allows.
    assert rule["ports"] == [{"port": "health", "protocol": "TCP"}]
    assert "health" in {p["name"] for p in worker_container(workload)["ports"]}
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector", "podSelector"}  # both in one peer: AND, not OR
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "ipBlock" not in peer


def test_grace_period_outlasts_the_worker_drain() -> None:
    config, _ = server_config(BASE)
    grace = pod_spec(inference())["terminationGracePeriodSeconds"]
    # stop() spends up to shutdown_grace_s, then publishes status and waits 0.5 s for acks.
    assert grace >= config.worker.shutdown_grace_s + 5


# Measured worker RSS with both shipped models loaded and the inbox empty: ~90 MiB; decoding
# one batch of ~1 MiB messages and the runtime's buffers add ~140 MiB at most
# (tests/reliability/test_fairness.py). The inbox's byte bound must fit beside that.
WORKER_RSS_WITHOUT_QUEUE = 256 * 2**20


def _mebibytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_worker_memory_bound_fits_the_pod_limit_with_headroom() -> None:
    limits = worker_container(inference())["resources"]["limits"]
    worker = server_config(BASE)[0].worker
    bound = worker.queue_bytes + worker.max_message_bytes + WORKER_RSS_WITHOUT_QUEUE
    assert bound <= 0.75 * _mebibytes(limits["memory"]), "queue_bytes leaves the pod no headroom"


def test_seed_init_container_copies_from_where_the_image_keeps_models() -> None:
    workload = inference()
    (init,) = pod_spec(workload)["initContainers"]
    script_mount = mount_path_of(workload, "seed-models", "scripts")
    command = init["command"]
    assert command[:2] == ["python", f"{script_mount}/seed_models.py"]
    assert command[3] == mount_path_of(workload, "seed-models", "models")
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile.serving").read_text(encoding="utf-8")
    assert re.search(rf"^COPY .*models/ {re.escape(command[2])}/?$", dockerfile, re.M), command[2]
    # The worker itself only reads the volume.
    (models_mount,) = [m for m in worker_container(workload)["volumeMounts"] if m["name"] == "models"]
    assert models_mount["readOnly"] is True


def test_every_configured_model_ships_a_complete_version_in_the_image() -> None:
    """The init container seeds the volume from the image's copy of models/: a configured
    model without a shipped version would keep every worker unready on a fresh volume."""
    config, _ = server_config(BASE)
    for name in config.models:
        shipped = REPO_ROOT / "models" / name
        complete = [
            v
            for v in (shipped.iterdir() if shipped.is_dir() else [])
            if re.fullmatch(r"[1-9][0-9]*", v.name)
            and (v / "metadata.json").is_file()
            and (v / "model.tflite").is_file()
        ]
        assert complete, f"models/{name}/ has no complete version (metadata.json + model.tflite)"


# -- mosquitto.conf --------------------------------------------------------------------


def mosquitto_conf() -> dict[str, list[str]]:
    text = extract_file(built_manifests(BASE), "ConfigMap", "mosquitto-config", "mosquitto.conf")
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition(" ")
            options.setdefault(key, []).append(value.strip())
    return options


def mosquitto() -> Manifest:
    return find_manifest(built_manifests(BASE), "Deployment", "mosquitto")


def test_mosquitto_conf_has_the_required_directives() -> None:
    conf = mosquitto_conf()
    assert conf["listener"] == ["1883"], "exactly one listener, on 1883"
    assert conf["set_tcp_nodelay"] == ["true"], "Nagle + delayed ACK: 40 ms QoS 1 round trips"
    assert conf["allow_anonymous"] == ["false"]
    assert conf["persistence"] == ["true"]
    # Users and ACLs from the dynamic-security plugin only: Mosquitto 2.0's acl_file does not
    # check SUBSCRIBE (issue 11) and would be consulted before the plugin.
    assert "password_file" not in conf and "acl_file" not in conf
    (plugin,) = conf["plugin"]
    assert PurePosixPath(plugin).name == "mosquitto_dynamic_security.so"
    assert len(conf["plugin_opt_config_file"]) == 1
    assert int(conf["max_queued_messages"][0]) >= 10_000, "the default 1000 drops requests in a burst"
    assert int(conf["max_queued_bytes"][0]) > 0
    worker = server_config(BASE)[0].worker
    # The workers speak MQTT 5: their Receive Maximum (not max_inflight_messages) sets what
    # the broker hands them; it must let the whole backlog reach the worker's inbox.
    assert worker.max_inflight == 65_535
    assert int(conf["max_packet_size"][0]) > worker.max_message_bytes
    assert conf["log_dest"] == ["stdout"]
    text = extract_file(built_manifests(BASE), "ConfigMap", "mosquitto-config", "mosquitto.conf")
    assert re.search(r"^#.*max_inflight_messages", text, re.M), "the max_inflight_messages comment"


def test_mosquitto_conf_paths_are_where_the_pod_mounts_them() -> None:
    conf = mosquitto_conf()
    workload = mosquitto()
    files = secret_file_paths(workload, "mosquitto")
    secret, key = files[conf["plugin_opt_config_file"][0]]
    assert secret.startswith("mosquitto-auth") and key == "dynamic-security.json"
    config_mount = PurePosixPath(mount_path_of(workload, "mosquitto", "config"))
    assert volume(workload, "config")["configMap"]["name"].startswith("mosquitto-config-")
    (container,) = containers(workload)
    assert str(config_mount / "mosquitto.conf") in container["command"]
    data_mount = mount_path_of(workload, "mosquitto", "data")
    assert conf["persistence_location"][0].rstrip("/") == data_mount
    assert volume(workload, "data")["persistentVolumeClaim"]["claimName"] == "mosquitto-data"
    assert mosquitto()["spec"]["strategy"]["type"] == "Recreate", "never two brokers on one persistence file"


# -- broker users and ACLs (dynamic-security plugin) ----------------------------------


def dynsec() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        extract_file(built_manifests(BASE), "Secret", "mosquitto-auth", "dynamic-security.json")
    )
    return document


def dynsec_clients() -> dict[str, dict[str, Any]]:
    return {client["username"]: client for client in dynsec()["clients"]}


def test_broker_users_and_acls_are_generated_from_the_shipped_server_config() -> None:
    """What `python -m provisioning.broker_auth` makes of inference/server.yaml, up to salts and hashes:
    regenerate the Secret (docs/deployment.md) whenever tenants change."""
    config, _ = server_config(BASE)
    plan = access_plan(config)
    expected = dynsec_document(plan, {user: PLACEHOLDER.format(user=user) for user in plan.names})
    shipped = dynsec()
    assert shipped["defaultACLAccess"] == expected["defaultACLAccess"]
    assert shipped["roles"] == expected["roles"]

    def without_hashes(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k not in ("password", "salt", "textname")} for c in clients]

    assert without_hashes(shipped["clients"]) == without_hashes(expected["clients"])
    assert set(dynsec_clients()) == {WORKER_USER, *config.tenants}


def test_no_tenant_may_subscribe_the_workers_filter_or_read_others() -> None:
    roles = {role["rolename"]: role["acls"] for role in dynsec()["roles"]}
    config, _ = server_config(BASE)
    for tenant in config.tenants:
        acls = roles[f"tenant-{tenant}"]
        assert all(acl["allow"] for acl in acls)
        assert {acl["topic"] for acl in acls if acl["acltype"].startswith("subscribe")} == {
            f"tenants/{tenant}/#",
            f"$share/+/tenants/{tenant}/#",
        }
        assert [acl["topic"] for acl in acls if acl["acltype"] == "publishClientSend"] == [
            f"tenants/{tenant}/models/+/requests", f"tenants/{tenant}/actuals"
        ]
    worker = roles[f"worker-{WORKER_USER}"]
    assert {"acltype": "subscribeLiteral", "topic": f"$share/{config.broker.shared_group}/tenants/+/models/+/requests",
            "allow": True} in worker  # fmt: skip
    assert dynsec()["defaultACLAccess"]["subscribe"] is False


def test_every_user_is_hashed_with_the_demo_placeholders() -> None:
    for user, client in dynsec_clients().items():
        assert verify_dynsec_password(PLACEHOLDER.format(user=user), client), user


def test_every_plaintext_credential_matches_the_broker_users() -> None:
    clients = dynsec_clients()
    worker = extract_file(built_manifests(BASE), "Secret", "inference-mqtt", "worker-password")
    assert verify_dynsec_password(worker, clients[WORKER_USER])
    tenant = extract_file(built_manifests(TENANT_CLIENT), "Secret", "tenant-acme-mqtt", "acme-password")
    assert verify_dynsec_password(tenant, clients["acme"])


# -- tenant client ---------------------------------------------------------------------


def test_tenant_client_config_validates_and_fits_the_deployment() -> None:
    manifests = built_manifests(TENANT_CLIENT)
    job = find_manifest(manifests, "Job", "tenant-client-acme")
    (container,) = containers(job)
    config_path = container["args"][container["args"].index("--config") + 1]
    config_mount = mount_path_of(job, "client", "config")
    assert PurePosixPath(config_path).parent == PurePosixPath(config_mount)
    cm_name = volume(job, "config")["configMap"]["name"]
    text = extract_file(manifests, "ConfigMap", cm_name, PurePosixPath(config_path).name)
    client = parse_client_config(text, "tenant.json")

    server, _ = server_config(BASE)
    assert client.tenant in server.tenants
    assert client.model in server.tenants[client.tenant].models
    assert client.broker.host == server.broker.host and client.broker.port == server.broker.port
    assert client.broker.username == client.tenant, "the ACL's %u: user name = tenant id"
    assert client.broker.password is None
    files = secret_file_paths(job, "client")
    assert str(client.broker.password_file) in files, f"{client.broker.password_file} not mounted: {sorted(files)}"
    # The image copies data/ to /app/data; the file must be in the repository.
    data = PurePosixPath(str(client.data))
    assert data.parts[:3] == ("/", "app", "data")
    assert (REPO_ROOT / "data" / Path(*data.parts[3:])).is_file(), data
    assert json.loads(text)["tenant"] == "acme"


# -- command lines ---------------------------------------------------------------------


def test_the_pods_command_lines_parse() -> None:
    """The worker's args (after the image's ENTRYPOINT) and the client Job's args are
    accepted by the real argument parsers."""
    from client_app.cli import build_parser as client_parser
    from server_app.main import build_parser as server_parser

    worker_args = server_parser().parse_args(worker_container(inference())["args"])
    assert worker_args.workers == 1, "one process per pod: scale with replicas"
    (client,) = containers(find_manifest(built_manifests(TENANT_CLIENT), "Job", "tenant-client-acme"))
    client_args = client_parser().parse_args(client["args"])
    assert client_args.mode == "stream" and client_args.duration == 60
