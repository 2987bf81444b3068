"""The Open Inference Protocol's REST payload schemas, as JSON Schema (draft 2020-12).

Transcribed from the specification's OpenAPI components (kserve/open-inference-protocol,
specification/protocol/open_inference_rest.yaml: inference_request, request_input,
tensor_data, inference_response, response_output, inference_error_response), not from our
code: tests check our payloads against what the specification says, not against ourselves.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

_DEFS: dict[str, Any] = {
    "parameters": {"type": "object"},
    "tensor_data": {
        "type": "array",
        "items": {
            "anyOf": [{"$ref": "#/$defs/tensor_data"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}]
        },
    },
    "request_input": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": {"$ref": "#/$defs/parameters"},
            "data": {"$ref": "#/$defs/tensor_data"},
        },
        "required": ["name", "shape", "datatype", "data"],
    },
    "request_output": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "parameters": {"$ref": "#/$defs/parameters"}},
        "required": ["name"],
    },
    "response_output": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string"},
            "parameters": {"$ref": "#/$defs/parameters"},
            "data": {"$ref": "#/$defs/tensor_data"},
        },
        "required": ["name", "shape", "datatype", "data"],
    },
}


def _schema(root: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator({**root, "$defs": _DEFS})


INFERENCE_REQUEST = _schema(
    {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"$ref": "#/$defs/parameters"},
            "inputs": {"type": "array", "items": {"$ref": "#/$defs/request_input"}},
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/request_output"}},
        },
        "required": ["inputs"],
    }
)

INFERENCE_RESPONSE = _schema(
    {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"$ref": "#/$defs/parameters"},
            "outputs": {"type": "array", "items": {"$ref": "#/$defs/response_output"}},
        },
        "required": ["model_name", "outputs"],
    }
)

INFERENCE_ERROR_RESPONSE = _schema(
    {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
)
