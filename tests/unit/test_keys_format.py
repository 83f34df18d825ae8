"""API key format (frugal.keys.format): round trip, scanner pattern, cheap rejection."""

from __future__ import annotations

import re

import pytest

from frugal.keys.format import (
    ALPHABET,
    KEY_LENGTH,
    PREFIX,
    SCANNER_PATTERN,
    checksum,
    encode_base62,
    fingerprint,
    new_key,
    parse_key,
)


def test_new_key_round_trips_through_parse_key() -> None:
    issued = new_key()
    parsed = parse_key(issued.plaintext)
    assert parsed is not None
    assert parsed.key_id == issued.key_id
    assert parsed.secret == issued.secret
    assert len(issued.plaintext) == KEY_LENGTH == 72
    assert issued.plaintext.startswith(f"{PREFIX}{issued.key_id}_")
    assert re.fullmatch(SCANNER_PATTERN, issued.plaintext)


def test_keys_are_distinct_and_carry_256_bits() -> None:
    keys = [new_key() for _ in range(500)]
    assert len({k.key_id for k in keys}) == 500
    assert len({k.secret for k in keys}) == 500
    assert all(len(k.secret) == 43 for k in keys)
    assert 62**43 > 2**256 > 62**42


@pytest.mark.parametrize("position", range(KEY_LENGTH))
def test_changing_any_one_character_is_rejected(position: int) -> None:
    plaintext = new_key().plaintext
    original = plaintext[position]
    replacement = ALPHABET[(ALPHABET.index(original) + 1) % 62] if original in ALPHABET else "x"
    flipped = plaintext[:position] + replacement + plaintext[position + 1 :]
    assert parse_key(flipped) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sk-proj-abc",
        "Bearer sk-frugal-",
        "sk-frugal-" + "A" * 62,  # right length, wrong checksum and no separator
        "sk-frugal-" + "A" * 12 + "-" + "A" * 49,  # wrong separator
    ],
)
def test_malformed_text_is_rejected(text: str) -> None:
    assert parse_key(text) is None


def test_wrong_charset_and_length_are_rejected_even_with_a_valid_checksum() -> None:
    issued = new_key()
    body = issued.plaintext[: -len(checksum(""))]
    bad_char = body[:-1] + "é"
    assert parse_key(bad_char + checksum(body)) is None
    assert parse_key(body + "A" + checksum(body + "A")) is None  # one char too long
    assert parse_key(issued.plaintext + " ") is None
    assert parse_key(issued.plaintext.upper()) is None


def test_base62_is_fixed_width() -> None:
    assert encode_base62(0, 4) == "0000"
    assert encode_base62(61, 2) == "0z"
    assert encode_base62(2**32 - 1, 6) != encode_base62(2**32 - 2, 6)
    with pytest.raises(ValueError):
        encode_base62(62**3, 3)


def test_repr_and_fingerprint_hide_the_secret() -> None:
    issued = new_key()
    parsed = parse_key(issued.plaintext)
    assert issued.secret not in repr(issued)
    assert issued.secret not in repr(parsed)
    assert fingerprint(issued.key_id) == issued.key_id[:8]
