"""``provisioning.broker_auth``: hashes Mosquitto accepts, dynamic-security/amqtt files from the config,
passwords file handling, worker client ids."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioning.broker_auth import (
    AMQTT_AUTH_FILE,
    DYNSEC_FILE,
    MOSQUITTO_CONF_FILE,
    AuthError,
    access_plan,
    dynsec_document,
    dynsec_password,
    generate,
    main,
    mosquitto_hash,
    verify_dynsec_password,
    verify_mosquitto_hash,
)
from provisioning.embedded_broker import EmbeddedAuthError, load_embedded_auth
from server_app.client_ids import TAG_HEX_CHARS, worker_client_id
from server_app.config import parse_config
from tests.support.configs import REPO_ROOT
from tests.support.mosquitto_conf import find_mosquitto_passwd


def _config(**broker: Any) -> dict[str, Any]:
    return {
        "broker": {"host": "127.0.0.1", "username": "inference-worker", "shared_group": "inference", **broker},
        "models": {"lstm": {"repository": "models/lstm"}, "ann": {"repository": "models/ann"}},
        "tenants": {
            "acme": {"models": ["lstm", "ann"]},
            "beta": {"models": ["ann"]},
            "course": {"models": ["lstm"], "format": "tutorial", "in_queue": "inqueue/lstm", "out_queue": "out q/lstm"},
        },
    }


def _write(tmp_path: Path, config: dict[str, Any], passwords: dict[str, Any] | None = None) -> tuple[Path, Path]:
    config_path = tmp_path / "server.yaml"
    config_path.write_text(yaml.safe_dump(config))
    passwords_path = tmp_path / "passwords.yaml"
    if passwords is not None:
        passwords_path.write_text(yaml.safe_dump(passwords))
    return config_path, passwords_path


# --------------------------------------------------------------------------- hashes


def test_hash_format_and_verification() -> None:
    hashed = mosquitto_hash("s3cret: with spaces and ü", salt=b"0123456789ab")
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert verify_mosquitto_hash("s3cret: with spaces and ü", hashed)
    assert not verify_mosquitto_hash("s3cret", hashed)
    assert mosquitto_hash("x") != mosquitto_hash("x"), "salts must be random"
    assert not verify_mosquitto_hash("x", "$7$101$not-base64!$x")
    assert not verify_mosquitto_hash("x", "plain")


def test_hashes_of_real_mosquitto_passwd_verify(tmp_path: Path) -> None:
    """Same format both ways: what mosquitto_passwd writes, we verify (Mosquitto reading ours is
    checked by every test that connects to the secured broker)."""
    path = tmp_path / "pw"
    path.write_text("alice:correct horse\n")
    subprocess.run([str(find_mosquitto_passwd()), "-U", str(path)], check=True, capture_output=True, timeout=30)
    hashed = path.read_text().strip().split(":", 1)[1]
    assert hashed.startswith("$7$")
    assert verify_mosquitto_hash("correct horse", hashed)
    assert not verify_mosquitto_hash("correct horsE", hashed)


def test_dynsec_password_is_the_same_pbkdf2_in_the_plugins_fields() -> None:
    fields = dynsec_password("s3cret: with spaces and ü", salt=b"0123456789ab")
    assert fields["salt"] == "MDEyMzQ1Njc4OWFi" and fields["iterations"] == 101
    assert mosquitto_hash("s3cret: with spaces and ü", salt=b"0123456789ab").endswith("$" + fields["password"])
    assert verify_dynsec_password("s3cret: with spaces and ü", fields)
    assert not verify_dynsec_password("s3cret", fields)


def _dynsec(**broker: Any) -> dict[str, Any]:
    plan = access_plan(parse_config(yaml.safe_dump(_config(**broker))))
    return dynsec_document(plan, dict.fromkeys(plan.names, "pw"))


def _acls(document: dict[str, Any], role: str) -> list[tuple[str, str]]:
    (found,) = [r for r in document["roles"] if r["rolename"] == role]
    assert all(acl["allow"] is True for acl in found["acls"])
    return [(acl["acltype"], acl["topic"]) for acl in found["acls"]]


# --------------------------------------------------------------------------- rules


def test_dynsec_roles_per_tenant_and_worker() -> None:
    document = _dynsec()
    assert document["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    clients = {c["username"]: c for c in document["clients"]}
    assert list(clients) == ["acme", "beta", "course", "inference-worker"]
    assert all(c["roles"] == [{"rolename": f"{'worker' if u == 'inference-worker' else 'tenant'}-{u}"}]
               for u, c in clients.items())  # fmt: skip
    assert all("clientid" not in c for c in clients.values()), "a clientid would limit a user to one connection"
    assert all(verify_dynsec_password("pw", c) for c in clients.values())
    assert _acls(document, "tenant-acme") == [
        ("publishClientSend", "tenants/acme/models/+/requests"),
        ("publishClientSend", "tenants/acme/actuals"),
        ("publishClientReceive", "tenants/acme/#"),
        ("subscribePattern", "tenants/acme/#"),
        ("subscribePattern", "$share/+/tenants/acme/#"),
    ]
    assert _acls(document, "tenant-course") == [
        ("publishClientSend", "tenants/course/models/+/requests"),
        ("publishClientSend", "tenants/course/actuals"),
        ("publishClientReceive", "tenants/course/#"),
        ("publishClientSend", "inqueue/lstm"),
        ("publishClientReceive", "out q/lstm"),
        ("subscribePattern", "tenants/course/#"),
        ("subscribePattern", "$share/+/tenants/course/#"),
        ("subscribePattern", "out q/lstm"),
    ]
    assert _acls(document, "worker-inference-worker") == [
        ("publishClientReceive", "tenants/+/models/+/requests"),
        ("publishClientReceive", "tenants/+/actuals"),
        ("publishClientSend", "tenants/+/#"),
        ("publishClientReceive", "inqueue/lstm"),
        ("publishClientSend", "out q/lstm"),
        ("publishClientSend", "service/workers/#"),
        ("publishClientReceive", "service/workers/#"),
        ("publishClientSend", "service/quality/#"),
        ("publishClientReceive", "$SYS/broker/#"),
        # Exactly the worker's own subscriptions: the configured group only, no plain form.
        ("subscribeLiteral", "$share/inference/tenants/+/models/+/requests"),
        ("subscribeLiteral", "tenants/+/actuals"),  # plain: every worker needs every reading
        ("subscribeLiteral", "$share/inference/inqueue/lstm"),
        ("subscribePattern", "service/workers/#"),
        ("subscribePattern", "$SYS/broker/#"),
    ]


def test_worker_subscribes_the_plain_filter_without_shared_group() -> None:
    acls = _acls(_dynsec(shared_group=None), "worker-inference-worker")
    subscriptions = [topic for kind, topic in acls if kind == "subscribeLiteral"]
    assert subscriptions == ["tenants/+/models/+/requests", "tenants/+/actuals", "inqueue/lstm"]


class _Broker:
    def __init__(self, password: str | None) -> None:
        self.password = password

    def resolve_password(self) -> str | None:
        return self.password


def test_worker_client_id_is_secret_stable_and_distinct() -> None:
    derived = worker_client_id(_Broker("worker-secret"), "inference-0")
    assert derived.startswith("inference-0-") and len(derived) == len("inference-0-") + TAG_HEX_CHARS
    assert derived == worker_client_id(_Broker("worker-secret"), "inference-0"), "stable: sessions resume"
    assert derived != worker_client_id(_Broker("worker-secret"), "inference-1")
    assert derived != worker_client_id(_Broker("other-secret"), "inference-0"), "keyed by the password"
    assert worker_client_id(_Broker(None), "laptop") == "laptop", "no password, no tenants: the plain id"


@pytest.mark.parametrize(
    ("broker", "message"),
    [
        ({"username": None}, "broker.username is not set: the worker service user is missing"),
        ({"username": "acme"}, "is also a tenant id"),
        ({"username": "bad:name"}, "cannot be an MQTT user name"),
        ({"username": "white space"}, "cannot be an MQTT user name"),
    ],
)
def test_clear_errors_for_the_worker_user(tmp_path: Path, broker: dict[str, Any], message: str) -> None:
    config_path, passwords_path = _write(tmp_path, _config(**broker))
    with pytest.raises(AuthError, match=message):
        generate(config_path, passwords_path, tmp_path / "out")


# --------------------------------------------------------------------------- passwords file


def test_missing_passwords_are_generated_and_written_back_privately(tmp_path: Path) -> None:
    config_path, passwords_path = _write(
        tmp_path, _config(), {"users": {"acme": "acme-pw", "retired": "old-pw"}, "note": "kept"}
    )
    passwords_path.chmod(0o644)
    result = generate(config_path, passwords_path, tmp_path / "out")
    stored = yaml.safe_load(passwords_path.read_text())
    assert stored["note"] == "kept"
    assert stored["users"]["acme"] == "acme-pw" and stored["users"]["retired"] == "old-pw"
    assert sorted(result.generated_passwords) == ["beta", "course", "inference-worker"]
    assert all(len(stored["users"][u]) >= 24 for u in result.generated_passwords)
    assert passwords_path.stat().st_mode & 0o777 == 0o600
    assert result.unused_passwords == ["retired"]
    clients = json.loads((tmp_path / "out" / DYNSEC_FILE).read_text())["clients"]
    assert [c["username"] for c in clients] == ["acme", "beta", "course", "inference-worker"], "stale users left out"
    for client in clients:
        assert verify_dynsec_password(stored["users"][client["username"]], client)
    assert (tmp_path / "out" / DYNSEC_FILE).stat().st_mode & 0o077 == 0, "password hashes: owner only"
    # Generating again changes no password.
    generate(config_path, passwords_path, tmp_path / "out")
    assert yaml.safe_load(passwords_path.read_text()) == stored


def test_no_generate_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path, passwords_path = _write(tmp_path, _config(), {"users": {"acme": "a"}})
    code = main(["--config", str(config_path), "--passwords", str(passwords_path), "--out", str(tmp_path / "o")])
    assert code == 0
    config_path, passwords_path = _write(tmp_path, _config(), {"users": {"acme": "a"}})
    argv = ["--config", str(config_path), "--passwords", str(passwords_path), "--out", str(tmp_path / "o2")]
    assert main([*argv, "--no-generate"]) == 2
    err = capsys.readouterr().err
    assert "tenant id(s) ['beta', 'course']" in err and "worker user 'inference-worker'" in err
    assert not (tmp_path / "o2").exists()


def test_worker_password_from_the_server_config(tmp_path: Path) -> None:
    secret_file = tmp_path / "worker-secret"
    secret_file.write_text("from-file\n")
    config_path, passwords_path = _write(tmp_path, _config(password_file=str(secret_file)), {"users": {}})
    result = generate(config_path, passwords_path, tmp_path / "out")
    assert "inference-worker" not in result.generated_passwords
    assert "inference-worker" not in yaml.safe_load(passwords_path.read_text())["users"]
    clients = {c["username"]: c for c in json.loads((tmp_path / "out" / DYNSEC_FILE).read_text())["clients"]}
    assert verify_dynsec_password("from-file", clients["inference-worker"])
    config_path, passwords_path = _write(
        tmp_path, _config(password_file=str(secret_file)), {"users": {"inference-worker": "different"}}
    )
    with pytest.raises(AuthError, match="differs from the server config"):
        generate(config_path, passwords_path, tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("users: [acme]", "'users' must map user names to passwords"),
        ("users: {acme: 1234}", "must be a string"),
        ("users: {acme: ''}", "is empty"),
        ("- a list", "top level must be a mapping"),
        ("users: {acme: [unclosed", "cannot read passwords file"),
    ],
)
def test_bad_passwords_file(tmp_path: Path, content: str, message: str) -> None:
    config_path, passwords_path = _write(tmp_path, _config())
    passwords_path.write_text(content)
    with pytest.raises(AuthError, match=message):
        generate(config_path, passwords_path, tmp_path / "out")


# --------------------------------------------------------------------------- amqtt file and CLI


def test_amqtt_auth_file_round_trip(tmp_path: Path) -> None:
    config_path, passwords_path = _write(tmp_path, _config(), {"users": {}})
    generate(config_path, passwords_path, tmp_path / "out")
    auth = load_embedded_auth(tmp_path / "out" / AMQTT_AUTH_FILE)
    assert auth.password_file == tmp_path / "out" / "amqtt.passwd"
    assert auth.subscribe_acl["acme"] == ["tenants/acme/#"]
    assert auth.publish_acl["acme"] == ["tenants/acme/models/+/requests", "tenants/acme/actuals"]
    assert auth.subscribe_acl["inference-worker"] == [
        "tenants/+/models/+/requests",
        "tenants/+/actuals",
        "inqueue/lstm",
        "service/workers/#",
    ]
    assert "$share" not in json.dumps(auth.subscribe_acl), "amqtt has no shared subscriptions"
    document = json.loads((tmp_path / "out" / AMQTT_AUTH_FILE).read_text())
    document["version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(EmbeddedAuthError, match="regenerate"):
        load_embedded_auth(tmp_path / "bad.json")


def test_cli_entry_point(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "provisioning.broker_auth", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    ).stdout
    assert "WRITTEN BACK" in help_text and "0600" in help_text
    config_path, passwords_path = _write(tmp_path, _config(), None)
    result = subprocess.run(
        [sys.executable, "-m", "provisioning.broker_auth", "--config", str(config_path),
         "--passwords", str(passwords_path), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "generated passwords for acme, beta, course, inference-worker" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [DYNSEC_FILE, MOSQUITTO_CONF_FILE, "amqtt.passwd", AMQTT_AUTH_FILE]
    )
    conf = (tmp_path / "out" / MOSQUITTO_CONF_FILE).read_text().splitlines()
    assert f"plugin_opt_config_file {(tmp_path / 'out' / DYNSEC_FILE).resolve()}" in conf
    assert "allow_anonymous false" in conf
    assert not [line for line in conf if line.startswith(("password_file", "acl_file"))]
    # An acl_file left over from an older version is named, not silently kept in force.
    (tmp_path / "out" / "mosquitto.acl").write_text("user acme\n")
    again = subprocess.run(
        [sys.executable, "-m", "provisioning.broker_auth", "--config", str(config_path),
         "--passwords", str(passwords_path), "--out", str(tmp_path / "out"),
         "--dynsec-path", "/mosquitto/auth/dynamic-security.json",
         "--dynsec-plugin", "/usr/lib/mosquitto_dynamic_security.so"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 0 and "mosquitto.acl from an older version" in again.stderr
    conf = (tmp_path / "out" / MOSQUITTO_CONF_FILE).read_text().splitlines()
    assert "plugin_opt_config_file /mosquitto/auth/dynamic-security.json" in conf
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in conf
    broken = subprocess.run(
        [sys.executable, "-m", "provisioning.broker_auth", "--config", str(tmp_path / "nope.yaml"), "--passwords",
         str(passwords_path), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert broken.returncode == 2 and "error: cannot read config" in broken.stderr
