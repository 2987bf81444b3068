"""Boot what the manifests deploy: the built mosquitto.conf and the dynamic-security plugin's
file (users and ACLs) on a real Mosquitto, the built server.yaml under
`python -m server_app --workers 3`, a tenant with its Secret's password. Requests spread over
the three workers, each answered exactly once; the tenant cannot join the workers' filter."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioning.broker_auth import find_dynsec_plugin
from tests.deployment.manifests import built_manifests, extract_file
from tests.support.configs import copy_model_repository, write_config
from tests.support.mosquitto import MosquittoBroker
from tests.support.mosquitto_conf import rewrite_mosquitto_conf
from tests.support.payloads import PacedLoad, count_answers
from tests.support.ports import free_port
from tests.support.probe import MqttProbe
from tests.support.workers import ServerProcess, wait_worker_status

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPLOYMENT = Path(__file__).resolve().parents[2] / "deployment"
BASE = DEPLOYMENT / "base"
TENANT = DEPLOYMENT / "examples" / "tenant-client" / "secrets" / "acme-password"


def test_manifests_boot_with_three_workers(tmp_path: Path) -> None:
    manifests = built_manifests(BASE)
    server_yaml = yaml.safe_load(extract_file(manifests, "ConfigMap", "inference-config", "server.yaml"))
    users = tmp_path / "dynamic-security.json"
    users.write_text(extract_file(manifests, "Secret", "mosquitto-auth", "dynamic-security.json"))
    plugin = find_dynsec_plugin()
    assert plugin is not None, "mosquitto_dynamic_security.so not found: install Debian's `mosquitto` package"
    conf = rewrite_mosquitto_conf(
        extract_file(manifests, "ConfigMap", "mosquitto-config", "mosquitto.conf"),
        port=free_port(),
        persistence_location=tmp_path / "data",
        log_file=tmp_path / "mosquitto.log",
        # Only where the files are: the image keeps the plugin in /usr/lib, Debian elsewhere.
        file_map={"/mosquitto/auth/dynamic-security.json": users, "/usr/lib/mosquitto_dynamic_security.so": plugin},
    )
    worker_password = tmp_path / "worker-password"
    worker_password.write_text(extract_file(manifests, "Secret", "inference-mqtt", "worker-password"))
    repository = copy_model_repository(tmp_path / "models")

    with MosquittoBroker(tmp_path / "mosquitto", conf_text=conf.text, port=conf.port) as broker:
        # Only what cannot be the same off-cluster changes: addresses, paths, the pod name.
        server_yaml["broker"].update(host=broker.connect_host, port=broker.port, password_file=str(worker_password))
        for name, model in server_yaml["models"].items():
            model["repository"] = str(repository / name)
        server_yaml["health"]["port"] = 0
        server_yaml["worker"]["id"] = "inference"
        config_path = write_config(tmp_path / "server.yaml", server_yaml)
        password = TENANT.read_text().strip()
        with ServerProcess(config_path, tmp_path / "server.log", "--workers", "3") as server:
            worker_user = server_yaml["broker"]["username"]
            with MqttProbe(
                broker.connect_host, broker.port, protocol="5", username=worker_user,
                password=worker_password.read_text().strip(),
            ).connect() as operator:
                operator.subscribe("service/workers/+/status")
                for index in range(3):
                    wait_worker_status(operator, f"inference-{index}")
            with MqttProbe(
                broker.connect_host, broker.port, protocol="5", username="acme", password=password
            ).connect() as tenant:
                tenant.subscribe("tenants/acme/models/lstm/responses")
                group = server_yaml["broker"]["shared_group"]
                joined = tenant.subscribe(f"$share/{group}/tenants/+/models/+/requests", check=False)
                assert joined == [0x87], "the broker must refuse a tenant the workers' filter"
                load = PacedLoad(tenant, "tenants/acme/models/lstm/requests", rate=900, duration_s=3, prefix="k8s")
                load.start().join(timeout=30)
                answers = tenant.wait_for(len(load.sent), timeout=30)
            per_id, per_worker, errors = count_answers(answers)
            assert not errors, errors[:3]
            assert per_id == {request_id: 1 for request_id in load.sent}
            fair = len(load.sent) / 3
            assert sorted(per_worker) == ["inference-0", "inference-1", "inference-2"]
            assert all(abs(count - fair) <= 0.2 * fair for count in per_worker.values()), per_worker
            assert server.stop() == 0
