"""docs/asyncapi.yaml: valid for the official AsyncAPI parser, and true to the code (issue 15).

The parser is @asyncapi/parser (npm), installed by .ci/run into scripts/node-checks with
`npm ci`; nothing is downloaded here. Topics come from contract/topics.py, error codes from
contract/errors.py, and payloads the server and the client produce validate against the
document's schemas.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml
from jsonschema import Draft7Validator

from contract import actuals, oip, oip_binary, topics
from contract.errors import ERROR_CODES, InvalidWindow, RequestError
from server_app.config import QualityConfig
from server_app.quality import QualityTracker
from tests.contract.oip_schema import INFERENCE_ERROR_RESPONSE, INFERENCE_REQUEST, INFERENCE_RESPONSE

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "docs" / "asyncapi.yaml"
NODE_CHECKS = REPO / "scripts" / "node-checks"


def run_parser(path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node not found: .ci/run installs Node.js (nodejs) and runs npm ci in scripts/node-checks"
    assert (NODE_CHECKS / "node_modules" / "@asyncapi" / "parser").is_dir(), (
        "the AsyncAPI parser is not installed: `npm ci --ignore-scripts --prefix scripts/node-checks` (.ci/run does)"
    )
    result = subprocess.run([node, "validate-asyncapi.mjs", str(path)], cwd=NODE_CHECKS, capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


def schema(document: dict[str, Any], name: str) -> Draft7Validator:
    """A component schema, its $refs resolved inside the document (AsyncAPI schemas are draft-07 based)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return Draft7Validator(root)


def test_the_official_parser_accepts_the_document() -> None:
    parsed = run_parser(DOCUMENT)
    assert parsed["errors"] == [] and parsed["version"] == "3.0.0", parsed["errors"]
    assert {c["id"] for c in parsed["channels"]} == {
        "requests", "responses", "errors", "quality", "actuals", "workerStatus"
    }
    assert {"sendRequest", "receiveAnswer", "receiveError"} <= {o["id"] for o in parsed["operations"]}


def test_the_parser_is_not_vacuous(tmp_path: Path, document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["channels"]["requests"]["address"] = 42
    broken["operations"]["sendRequest"]["action"] = "publish"  # AsyncAPI 2 wording, invalid in 3.0
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert run_parser(path)["errors"]


def test_channel_addresses_are_the_contracts_topics(document: dict[str, Any]) -> None:
    channels = document["channels"]
    assert channels["requests"]["address"] == topics.request_topic("{tenant}", "{model}")
    assert channels["responses"]["address"] == topics.response_topic("{tenant}", "{model}")
    assert channels["errors"]["address"] == topics.errors_topic("{tenant}")
    assert channels["workerStatus"]["address"] == topics.status_topic("{workerId}")
    assert channels["quality"]["address"] == topics.quality_topic("{tenant}", "{model}")
    assert channels["actuals"]["address"] == topics.actuals_topic("{tenant}")
    name_rule = topics.NAME_PATTERN
    for parameter in document["components"]["parameters"].values():
        assert name_rule in parameter["description"]
    # what a worker subscribes to matches every request channel address
    assert topics.REQUEST_FILTER == "tenants/+/models/+/requests"


def test_error_codes_are_the_contracts(document: dict[str, Any]) -> None:
    assert set(document["components"]["schemas"]["errorCode"]["enum"]) == set(ERROR_CODES)


def test_content_type_is_the_codecs(document: dict[str, Any]) -> None:
    assert document["defaultContentType"] == oip.CONTENT_TYPE
    for name, message in document["components"]["messages"].items():
        binary = name.endswith("Binary")
        assert message["contentType"] == (oip_binary.CONTENT_TYPE if binary else oip.CONTENT_TYPE), name
    header = document["components"]["schemas"]["binaryUserProperties"]["properties"]
    assert oip_binary.HEADER_LENGTH_PROPERTY in header


def test_payloads_the_code_produces_validate(document: dict[str, Any]) -> None:
    windows = np.arange(12, dtype=np.float32).reshape(2, 6, 1)
    request = orjson.loads(oip.encode_request("acme-1", windows, {"sent_at": 1.5}))
    schema(document, "inferenceRequest").validate(request)
    forecasts = np.array([[1.5], [2.5]], dtype=np.float32)
    parameters = {"tenant": "acme", "served_at": 2.0, "worker": "w-0", "queue_ms": 0.1, "compute_ms": 0.2}
    response = orjson.loads(oip.encode_response("acme-1", "lstm", 3, forecasts, parameters))
    schema(document, "inferenceResponse").validate(response)
    INFERENCE_RESPONSE.validate(response)
    horizon = orjson.loads(oip.encode_response(None, "lstm", 1, np.zeros((4, 3), np.float32), parameters))
    schema(document, "inferenceResponse").validate(horizon)
    for cls in RequestError.__subclasses__():
        body = orjson.loads(oip.encode_error("acme-1", cls("why")))
        schema(document, "errorResponse").validate(body)
        INFERENCE_ERROR_RESPONSE.validate(body)
    # The quality message, as the tracker writes it, and actuals as the decoder accepts them.
    tracker = QualityTracker(QualityConfig(min_resolved=1), clock=lambda: 1.0)
    window = np.arange(6, dtype=float)[None, :]
    tracker.observe("acme", "lstm", "s", 5.0, 1.0, window, [(1, "live", 6.0), (2, "shadow", 5.0)])
    tracker.observe("acme", "lstm", "s", 6.0, 1.0, window + 1, [(1, "live", 7.0)])
    schema(document, "quality").validate(orjson.loads(orjson.dumps(tracker.describe("acme", "lstm"))))
    readings = [{"series": "s", "time": 7, "value": 7.5}]
    assert actuals.decode_actuals(orjson.dumps(readings), max_bytes=10_000)
    schema(document, "actuals").validate(readings)
    schema(document, "actuals").validate(readings[0])


def test_the_documents_examples_are_what_the_code_accepts_and_produces(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    for name in ("inferenceRequest", "inferenceResponse", "errorResponse"):
        for example in messages[name]["examples"]:
            schema(document, name).validate(example["payload"])
    request = messages["inferenceRequest"]["examples"][0]["payload"]
    INFERENCE_REQUEST.validate(request)
    decoded = oip.decode_request(orjson.dumps(request), max_bytes=1 << 20, max_windows=64)
    assert decoded.windows.shape == (2, 6, 1) and decoded.id == request["id"]
    error = messages["errorResponse"]["examples"][0]["payload"]
    assert error["parameters"]["code"] == InvalidWindow.code


def test_the_schemas_refuse_what_the_code_refuses(document: dict[str, Any]) -> None:
    validator = schema(document, "inferenceRequest")
    assert not validator.is_valid({"id": "x"})  # no inputs
    assert not validator.is_valid({"inputs": [{"name": "w", "shape": [1, 6], "data": [1] * 6}]})  # no datatype
    assert not validator.is_valid({"id": 7, "inputs": []})  # id must be a string
    assert not schema(document, "errorResponse").is_valid({"error": {"code": "x"}})  # error must be a string
