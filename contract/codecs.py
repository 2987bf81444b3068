"""One codec object per payload format: what the worker needs to read a request and answer it."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from contract import oip, tutorial
from contract.errors import RequestError
from contract.oip import DecodedRequest


class Codec(Protocol):
    name: str
    content_type: str

    def decode(
        self, payload: bytes, *, max_bytes: int, max_windows: int, header_length: str | None = None
    ) -> DecodedRequest:
        """`header_length`: the request's `Inference-Header-Content-Length` user property (binary
        tensors, MQTT 5), if it had one."""
        ...

    def encode_prediction(
        self,
        request_id: str | None,
        model_name: str,
        model_version: int,
        forecasts: np.ndarray,
        parameters: dict[str, Any],
    ) -> bytes: ...

    def encode_error(self, request_id: str | None, error: RequestError) -> bytes: ...


class OipCodec:
    name = "oip"
    content_type = oip.CONTENT_TYPE

    def decode(
        self, payload: bytes, *, max_bytes: int, max_windows: int, header_length: str | None = None
    ) -> DecodedRequest:
        return oip.decode_request(payload, max_bytes=max_bytes, max_windows=max_windows, header_length=header_length)

    def encode_prediction(
        self,
        request_id: str | None,
        model_name: str,
        model_version: int,
        forecasts: np.ndarray,
        parameters: dict[str, Any],
    ) -> bytes:
        return oip.encode_response(request_id, model_name, model_version, forecasts, parameters)

    def encode_error(self, request_id: str | None, error: RequestError) -> bytes:
        return oip.encode_error(request_id, error)


class TutorialCodec:
    name = "tutorial"
    content_type = tutorial.CONTENT_TYPE

    def decode(
        self, payload: bytes, *, max_bytes: int, max_windows: int, header_length: str | None = None
    ) -> DecodedRequest:
        return tutorial.decode_request(payload, max_bytes=max_bytes)  # JSON only: no binary tensors

    def encode_prediction(
        self,
        request_id: str | None,
        model_name: str,
        model_version: int,
        forecasts: np.ndarray,
        parameters: dict[str, Any],
    ) -> bytes:
        return tutorial.encode_response(model_name, float(forecasts.flat[0]))

    def encode_error(self, request_id: str | None, error: RequestError) -> bytes:
        return tutorial.encode_error(request_id, error)


OIP: Codec = OipCodec()
TUTORIAL: Codec = TutorialCodec()
