"""Mosquitto's password hashes (PBKDF2-HMAC-SHA512): the ``$7$`` lines ``mosquitto_passwd`` writes,
the dynamic-security plugin's ``password``/``salt``/``iterations`` fields, and their checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from provisioning.auth_errors import AuthError

__all__ = [
    "MOSQUITTO_ITERATIONS",
    "dynsec_password",
    "mosquitto_hash",
    "verify_dynsec_password",
    "verify_mosquitto_hash",
]

MOSQUITTO_ITERATIONS = 101  # what mosquitto_passwd 2.0 writes (`-I` changes it there)
_SALT_BYTES = 12
_DIGEST = "sha512"


def _pbkdf2(password: str, iterations: int, salt: bytes | None) -> tuple[bytes, bytes]:
    if iterations < 1:
        raise AuthError(f"iterations must be positive, got {iterations}")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    return salt, hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations)


def mosquitto_hash(password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``, as ``mosquitto_passwd`` writes it."""
    salt, digest = _pbkdf2(password, iterations, salt)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def dynsec_password(
    password: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None
) -> dict[str, Any]:
    """A dynamic-security client's ``password``, ``salt`` (base64) and ``iterations``: the same
    PBKDF2-HMAC-SHA512 as :func:`mosquitto_hash`, in the plugin's JSON fields."""
    salt, digest = _pbkdf2(password, iterations, salt)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def verify_dynsec_password(password: str, client: Mapping[str, Any]) -> bool:
    """Check ``password`` against a dynamic-security client record (see :func:`dynsec_password`)."""
    try:
        salt = base64.b64decode(str(client["salt"]), validate=True)
        digest = base64.b64decode(str(client["password"]), validate=True)
        iterations = int(client["iterations"])
    except (KeyError, TypeError, ValueError):
        return False
    got = hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations, len(digest))
    return hmac.compare_digest(got, digest)


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    """Check ``password`` against a ``$7$`` (PBKDF2-SHA512) or ``$6$`` (salted SHA-512) hash."""
    parts = hashed.strip().split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
            got = hashlib.pbkdf2_hmac(_DIGEST, password.encode("utf-8"), salt, iterations, len(digest))
            return hmac.compare_digest(got, digest)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            return hmac.compare_digest(hashlib.sha512(password.encode("utf-8") + salt).digest(), digest)
    except ValueError:
        return False
    return False
