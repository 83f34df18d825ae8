"""API key format: `sk-frugal-<id>_<secret><checksum>`, recognisable by secret scanners.

Pure layer (shared by the safety filter and the control plane). The key id is
public (it names the record in Redis and is safe to log in part); the secret is
256 random bits from `secrets`; the trailing checksum (CRC32 of everything
before it, base62) lets `parse_key` reject typos and random strings before any
Redis lookup, and lets scanners confirm a match without false positives (the
same idea as GitHub's token format, github.blog 2021-04-05 "Behind GitHub's new
authentication token formats").
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass

PREFIX = "sk-frugal-"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 12  # 62**12 ~ 2**71: ids never collide in practice
SECRET_BYTES = 32  # 256 bits of entropy
SECRET_LENGTH = 43  # ceil(256 / log2(62))
CHECKSUM_LENGTH = 6  # 62**6 > 2**32 holds any CRC32
SEPARATOR = "_"
KEY_LENGTH = len(PREFIX) + ID_LENGTH + len(SEPARATOR) + SECRET_LENGTH + CHECKSUM_LENGTH
# For secret scanners: sk-frugal-[0-9A-Za-z]{12}_[0-9A-Za-z]{49}
SCANNER_PATTERN = (
    rf"{PREFIX}[0-9A-Za-z]{{{ID_LENGTH}}}_[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}}"
)

_ALPHABET_SET = frozenset(ALPHABET)


@dataclass(frozen=True)
class IssuedKey:
    """A freshly minted key: the plaintext is shown to its owner once and never stored."""

    key_id: str
    plaintext: str
    secret: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"IssuedKey(key_id={self.key_id!r}, plaintext=<redacted>)"


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedKey(key_id={self.key_id!r}, secret=<redacted>)"


def encode_base62(value: int, width: int) -> str:
    """`value` in base62, left-padded with '0' to exactly `width` characters."""
    if value < 0 or value >= 62**width:
        raise ValueError(f"{value} does not fit in {width} base62 digits")
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return encode_base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def new_key_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(ID_LENGTH))


def new_key() -> IssuedKey:
    key_id = new_key_id()
    secret = encode_base62(int.from_bytes(secrets.token_bytes(SECRET_BYTES)), SECRET_LENGTH)
    body = f"{PREFIX}{key_id}{SEPARATOR}{secret}"
    return IssuedKey(key_id=key_id, plaintext=body + checksum(body), secret=secret)


def parse_key(text: str) -> ParsedKey | None:
    """The id and secret of a well-formed key; None for anything else (no I/O, no exceptions)."""
    if len(text) != KEY_LENGTH or not text.startswith(PREFIX):
        return None
    key_id_end = len(PREFIX) + ID_LENGTH
    if text[key_id_end] != SEPARATOR:
        return None
    key_id = text[len(PREFIX) : key_id_end]
    tail = text[key_id_end + 1 :]  # secret + checksum
    if not _ALPHABET_SET.issuperset(key_id) or not _ALPHABET_SET.issuperset(tail):
        return None
    if not secrets.compare_digest(checksum(text[:-CHECKSUM_LENGTH]), text[-CHECKSUM_LENGTH:]):
        return None
    return ParsedKey(key_id=key_id, secret=tail[:SECRET_LENGTH])


def is_key_id(text: str) -> bool:
    return len(text) == ID_LENGTH and _ALPHABET_SET.issuperset(text)


def fingerprint(key_id: str) -> str:
    """What logs may show of a key: the first 8 characters of its public id."""
    return key_id[:8]
