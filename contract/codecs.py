"""One codec object per payload format: what the worker needs to read a request and answer it."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from contract import oip, oip_binary, tutorial
from contract.errors import RequestError
from contract.oip import DecodedRequest
from contract.oip_binary import BinaryForm


class Encoded(NamedTuple):
    """An answer's payload and what its MQTT 5 properties say of it."""

    payload: bytes
    content_type: str
    header_length: int | None = None  # the user property `Inference-Header-Content-Length`, if any


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
        binary: BinaryForm | None = None,
    ) -> Encoded:
        """`binary`: the request asked for a binary answer (DecodedRequest.binary_answer), framed so."""
        ...

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
        binary: BinaryForm | None = None,
    ) -> Encoded:
        if binary is None:
            return Encoded(oip.encode_response(request_id, model_name, model_version, forecasts, parameters),
                           self.content_type)
        payload, length = oip.encode_binary_response(
            request_id, model_name, model_version, forecasts, parameters, binary
        )
        return Encoded(payload, oip_binary.CONTENT_TYPE, length if binary is BinaryForm.HEADER_PROPERTY else None)

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
        binary: BinaryForm | None = None,
    ) -> Encoded:
        # a tutorial request never asks for binary (its decoder reads JSON only)
        return Encoded(tutorial.encode_response(model_name, float(forecasts.flat[0])), self.content_type)

    def encode_error(self, request_id: str | None, error: RequestError) -> bytes:
        return tutorial.encode_error(request_id, error)


OIP: Codec = OipCodec()
TUTORIAL: Codec = TutorialCodec()
