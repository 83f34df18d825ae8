"""Peppered HMAC-SHA256 of key secrets, with versioned peppers.

Pure layer, plus two small file helpers at the edge (`load_peppers`,
`ensure_pepper_file`). Secrets carry 256 random bits, so a fast keyed hash is
enough (no password KDF needed); the pepper lives only in the environment or a
0600 file, never in Redis, so a dump of Redis alone cannot verify guesses.
Peppers are versioned: new keys use the highest version, a record remembers the
version it was hashed with, and old versions stay loaded until their keys are gone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PEPPERS_ENV = "FRUGAL_KEY_PEPPERS"
PEPPER_FILE_ENV = "FRUGAL_KEY_PEPPER_FILE"
PEPPER_BYTES = 32
MIN_PEPPER_BYTES = 16


class PepperError(ValueError):
    """Peppers are missing or malformed (a start-up error, never a request error)."""


@dataclass(frozen=True)
class Peppers:
    """version -> pepper bytes; the highest version is the one new hashes use."""

    by_version: Mapping[int, bytes]

    def __post_init__(self) -> None:
        if not self.by_version:
            raise PepperError("at least one pepper is needed")
        for version, pepper in self.by_version.items():
            if version < 1:
                raise PepperError(f"pepper version {version} must be >= 1")
            if len(pepper) < MIN_PEPPER_BYTES:
                raise PepperError(f"pepper {version} is shorter than {MIN_PEPPER_BYTES} bytes")

    @property
    def current(self) -> int:
        return max(self.by_version)

    def __repr__(self) -> str:
        return f"Peppers(versions={sorted(self.by_version)})"


def hash_secret(secret: str, peppers: Peppers, version: int) -> str:
    """Hex HMAC-SHA256 of the secret under pepper `version` (KeyError if not loaded)."""
    pepper = peppers.by_version[version]
    return hmac.new(pepper, secret.encode("ascii"), hashlib.sha256).hexdigest()


def verify(secret: str, stored_hash: str, version: int, peppers: Peppers) -> bool:
    """Constant-time check of `secret` against a stored hash; False if the version is unknown."""
    known = version in peppers.by_version
    # An unknown version still costs one HMAC and one comparison, like a wrong secret.
    computed = hash_secret(secret, peppers, version if known else peppers.current)
    same = hmac.compare_digest(computed.encode("ascii"), stored_hash.encode("utf-8"))
    return same and known


def parse_peppers_json(text: str) -> Peppers:
    """`{"1": "<base64>", "2": "<base64>"}` -> Peppers."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise PepperError(f"peppers are not JSON: {error.msg}") from None
    if not isinstance(raw, dict):
        raise PepperError('peppers must be a JSON object like {"1": "<base64>"}')
    by_version: dict[int, bytes] = {}
    for version, value in raw.items():
        try:
            by_version[int(version)] = base64.b64decode(str(value), validate=True)
        except (ValueError, binascii.Error):
            raise PepperError(
                f"pepper {version!r}: version must be an integer, value base64"
            ) from None
    return Peppers(by_version)


def load_peppers(environ: Mapping[str, str] | None = None) -> Peppers:
    """From $FRUGAL_KEY_PEPPERS (JSON) or else the JSON file named by $FRUGAL_KEY_PEPPER_FILE."""
    env = os.environ if environ is None else environ
    if text := env.get(PEPPERS_ENV):
        return parse_peppers_json(text)
    if path := env.get(PEPPER_FILE_ENV):
        try:
            return parse_peppers_json(Path(path).read_text())
        except OSError as error:
            raise PepperError(f"cannot read {PEPPER_FILE_ENV}={path}: {error.strerror}") from None
    raise PepperError(f"set {PEPPERS_ENV} or {PEPPER_FILE_ENV} (see `frugal up`)")


def ensure_pepper_file(path: Path) -> Path:
    """Create `path` (mode 0600) holding one fresh 32-byte pepper as version 1, unless it exists."""
    pepper = base64.b64encode(secrets.token_bytes(PEPPER_BYTES)).decode("ascii")
    write_secret_file(path, json.dumps({"1": pepper}) + "\n")
    return path


def write_secret_file(path: Path, content: str) -> bool:
    """Write `content` to a new 0600 file; False (and no change) if `path` already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(content)
    return True
