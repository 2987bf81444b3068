"""``server_app.auth``: hashes Mosquitto accepts, ACL/amqtt files from the config, passwords file handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server_app.auth import (
    AMQTT_AUTH_FILE,
    MOSQUITTO_ACL_FILE,
    MOSQUITTO_PASSWORD_FILE,
    AuthError,
    access_plan,
    generate,
    load_embedded_auth,
    main,
    mosquitto_hash,
    render_mosquitto_acl,
    verify_mosquitto_hash,
)
from server_app.config import parse_config
from tests.brokers import find_mosquitto_passwd
from tests.serving import REPO_ROOT


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


# --------------------------------------------------------------------------- rules


def test_acl_rules_per_tenant_and_worker() -> None:
    acl = render_mosquitto_acl(access_plan(parse_config(yaml.safe_dump(_config()))))
    sections = {}
    for block in acl.split("\nuser ")[1:]:
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        sections[lines[0]] = lines[1:]
    assert sections["acme"] == ["topic write tenants/acme/models/+/requests", "topic read tenants/acme/#"]
    assert sections["course"] == [
        "topic write tenants/course/models/+/requests",
        "topic read tenants/course/#",
        "topic write inqueue/lstm",
        "topic read out q/lstm",
    ]
    assert sections["inference-worker"] == [
        "topic read tenants/+/models/+/requests",
        "topic read $share/inference/tenants/+/models/+/requests",
        "topic write tenants/+/#",
        "topic read inqueue/lstm",
        "topic read $share/inference/inqueue/lstm",
        "topic write out q/lstm",
        "topic readwrite service/workers/#",
    ]
    # Nothing before the first `user` line: anonymous clients get no rights.
    assert all(line.startswith("#") or not line for line in acl.split("\nuser ")[0].splitlines())


def test_no_share_rules_without_shared_group() -> None:
    acl = render_mosquitto_acl(access_plan(parse_config(yaml.safe_dump(_config(shared_group=None)))))
    assert "$share" not in acl


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
    users = [line.split(":", 1)[0] for line in (tmp_path / "out" / MOSQUITTO_PASSWORD_FILE).read_text().splitlines()]
    assert users == ["acme", "beta", "course", "inference-worker"], "stale users are left out"
    for line in (tmp_path / "out" / MOSQUITTO_PASSWORD_FILE).read_text().splitlines():
        user, hashed = line.split(":", 1)
        assert verify_mosquitto_hash(stored["users"][user], hashed)
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
    hashed = dict(line.split(":", 1) for line in (tmp_path / "out" / MOSQUITTO_PASSWORD_FILE).read_text().splitlines())[
        "inference-worker"
    ]
    assert verify_mosquitto_hash("from-file", hashed)
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
    assert auth.publish_acl["acme"] == ["tenants/acme/models/+/requests"]
    assert auth.subscribe_acl["inference-worker"] == [
        "tenants/+/models/+/requests",
        "inqueue/lstm",
        "service/workers/#",
    ]
    assert "$share" not in json.dumps(auth.subscribe_acl), "amqtt has no shared subscriptions"
    document = json.loads((tmp_path / "out" / AMQTT_AUTH_FILE).read_text())
    document["version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(AuthError, match="regenerate"):
        load_embedded_auth(tmp_path / "bad.json")


def test_cli_entry_point(tmp_path: Path) -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "server_app.auth", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    assert "WRITTEN BACK" in help_text and "0600" in help_text
    config_path, passwords_path = _write(tmp_path, _config(), None)
    result = subprocess.run(
        [sys.executable, "-m", "server_app.auth", "--config", str(config_path), "--passwords", str(passwords_path),
         "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "generated passwords for acme, beta, course, inference-worker" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [MOSQUITTO_PASSWORD_FILE, MOSQUITTO_ACL_FILE, "amqtt.passwd", AMQTT_AUTH_FILE]
    )
    broken = subprocess.run(
        [sys.executable, "-m", "server_app.auth", "--config", str(tmp_path / "nope.yaml"), "--passwords",
         str(passwords_path), "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert broken.returncode == 2 and "error: cannot read config" in broken.stderr
