"""TLS between workers, tenants and Mosquitto, with certificates made here by the openssl CLI.

A private CA signs a server certificate for 127.0.0.1 (subjectAltName IP, so host name
verification stays on) and a client certificate. Mosquitto's listener gets ``cafile``,
``certfile`` and ``keyfile`` (plus ``require_certificate true`` for the client-certificate
case); the worker connects with its ``broker.tls`` config and serves a request.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from server_app.config import parse_config
from tests.support.configs import server_config_dict
from tests.support.messages import MqttProbeError, TlsFiles
from tests.support.mosquitto import MosquittoBroker
from tests.support.payloads import oip_request, windows_from_sample
from tests.support.probe import MqttProbe
from tests.support.workers import running_worker

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing Mosquitto presents


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed: {result.stderr}"


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)  # fmt: skip
    return cert, key


def _sign(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
             cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)  # fmt: skip
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is needed to make test certificates (apt-get install openssl)")
    directory = tmp_path_factory.mktemp("pki")
    ca = _make_ca(directory, "test-ca")
    other_ca, _ = _make_ca(directory, "other-ca")
    server = _sign(directory, "127.0.0.1", ca, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _sign(directory, "inference-worker", ca, "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca)


def _tls_broker(directory: Path, pki: Pki, *, require_certificate: bool) -> MosquittoBroker:
    extra = [f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}"]
    if require_certificate:
        extra.append("require_certificate true")
    return MosquittoBroker(directory, extra_conf=extra)


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    broker = _tls_broker(tmp_path / "mosquitto", pki, require_certificate=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mtls_broker(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    broker = _tls_broker(tmp_path / "mosquitto", pki, require_certificate=True)
    broker.start()
    yield broker
    broker.stop()


def _config(broker: MosquittoBroker, repository: Path, tls: dict[str, Any]) -> dict[str, Any]:
    config = server_config_dict(broker.host, broker.port, repository, shared_group="inference", protocol="5")
    config["broker"]["tls"] = tls
    return config


def _round_trip(broker: MosquittoBroker, tls: TlsFiles) -> dict[str, Any]:
    with MqttProbe.for_tenant(broker.host, broker.port, "acme", tls=tls) as tenant:
        tenant.send("tenants/acme/models/lstm/requests", "tls-1", oip_request("tls-1", windows_from_sample(2)))
        assert not tenant.wait_answers(["tls-1"], timeout=15)
        return tenant.snapshot()["tls-1"][0].body


def test_worker_serves_over_tls(tls_broker: MosquittoBroker, repository: Path, pki: Pki) -> None:
    with running_worker(_config(tls_broker, repository, {"ca_file": str(pki.ca)})):
        body = _round_trip(tls_broker, TlsFiles(pki.ca))
    assert body["outputs"][0]["shape"] == [2, 1]
    # The listener speaks TLS only: a plain MQTT client gets no CONNACK.
    with pytest.raises((MqttProbeError, OSError)):
        MqttProbe(tls_broker.host, tls_broker.port, protocol="5", connect_timeout=2).connect()


def test_worker_with_client_certificate_when_the_broker_requires_one(
    mtls_broker: MosquittoBroker, repository: Path, pki: Pki
) -> None:
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    with running_worker(_config(mtls_broker, repository, tls)):
        body = _round_trip(mtls_broker, TlsFiles(pki.ca, pki.client_cert, pki.client_key))
    assert body["id"] == "tls-1" and "error" not in body
    # Without a client certificate the handshake fails (the probe: closed before CONNACK).
    with pytest.raises((ssl.SSLError, OSError, TimeoutError, MqttProbeError)):
        MqttProbe.for_tenant(mtls_broker.host, mtls_broker.port, "acme", tls=TlsFiles(pki.ca)).connect(timeout=3)


def test_worker_refuses_a_broker_its_ca_did_not_sign(tls_broker: MosquittoBroker, repository: Path, pki: Pki) -> None:
    config = parse_config(yaml.safe_dump(_config(tls_broker, repository, {"ca_file": str(pki.other_ca)})))
    with running_worker(config, client_id="tls-untrusting-worker", ready_within=None) as worker:
        assert not worker.wait_ready(3), "connected to a broker whose certificate its CA did not sign"
        assert worker.ready()[1] == "not connected to the broker"
