"""Peppered hashing (frugal.keys.hashing) and the admin token file (frugal.keys.admin_token)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from frugal.keys.admin_token import AdminTokenError, ensure_admin_token_file, load_admin_token
from frugal.keys.hashing import (
    PepperError,
    Peppers,
    ensure_pepper_file,
    hash_secret,
    load_peppers,
    parse_peppers_json,
    verify,
)

PEPPERS = Peppers({1: b"a" * 32, 2: b"b" * 32})
SECRET = "0123456789abcdefghijABCDEFGHIJ0123456789abc"


def test_current_pepper_is_the_highest_version() -> None:
    assert PEPPERS.current == 2
    assert "aaaa" not in repr(PEPPERS)


def test_hashes_differ_by_pepper_version_and_verify_with_their_own() -> None:
    v1 = hash_secret(SECRET, PEPPERS, 1)
    v2 = hash_secret(SECRET, PEPPERS, 2)
    assert v1 != v2
    assert len(v1) == 64 and SECRET not in v1
    assert verify(SECRET, v1, 1, PEPPERS)
    assert verify(SECRET, v2, 2, PEPPERS)
    assert not verify(SECRET, v1, 2, PEPPERS)
    assert not verify(SECRET, v2, 1, PEPPERS)


def test_verify_refuses_wrong_secret_unknown_version_and_odd_stored_hashes() -> None:
    stored = hash_secret(SECRET, PEPPERS, 1)
    assert not verify(SECRET[:-1] + "x", stored, 1, PEPPERS)
    # Unknown version: refused even though the current pepper's hash is presented.
    assert not verify(SECRET, hash_secret(SECRET, PEPPERS, 2), 3, PEPPERS)
    # Damaged stored values go through the same compare_digest path and are refused.
    assert not verify(SECRET, "", 1, PEPPERS)
    assert not verify(SECRET, stored[:-1], 1, PEPPERS)
    assert not verify(SECRET, "é" * 64, 1, PEPPERS)


def test_a_retired_pepper_stops_verifying_its_hashes() -> None:
    stored = hash_secret(SECRET, PEPPERS, 1)
    assert not verify(SECRET, stored, 1, Peppers({2: b"b" * 32}))


def _peppers_json(**versions: bytes) -> str:
    return json.dumps({v: base64.b64encode(p).decode() for v, p in versions.items()})


def test_load_peppers_from_env_json_then_file(tmp_path: Path) -> None:
    text = _peppers_json(**{"1": b"x" * 32, "2": b"y" * 32})
    assert load_peppers({"FRUGAL_KEY_PEPPERS": text}).by_version == {1: b"x" * 32, 2: b"y" * 32}
    path = tmp_path / "peppers.json"
    path.write_text(_peppers_json(**{"7": b"z" * 32}))
    assert load_peppers({"FRUGAL_KEY_PEPPER_FILE": str(path)}).current == 7


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"one": "eHh4eHh4eHh4eHh4eHh4eA=="}',
        '{"1": "not base64!"}',
        '{"1": "eHg="}',
    ],
)
def test_bad_peppers_are_refused(text: str) -> None:
    with pytest.raises(PepperError):
        parse_peppers_json(text)


def test_missing_peppers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PepperError, match="FRUGAL_KEY_PEPPERS"):
        load_peppers({})
    with pytest.raises(PepperError, match="cannot read"):
        load_peppers({"FRUGAL_KEY_PEPPER_FILE": str(tmp_path / "absent.json")})


def test_ensure_pepper_file_creates_0600_once(tmp_path: Path) -> None:
    path = ensure_pepper_file(tmp_path / "var" / "key-peppers.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    peppers = load_peppers({"FRUGAL_KEY_PEPPER_FILE": str(path)})
    assert peppers.current == 1 and len(peppers.by_version[1]) == 32
    ensure_pepper_file(path)
    assert path.read_text() == first


def test_admin_token_from_env_file_or_default_file(tmp_path: Path) -> None:
    assert load_admin_token({"FRUGAL_ADMIN_TOKEN": "t" * 20}) == "t" * 20
    path = ensure_admin_token_file(tmp_path / "admin-token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = load_admin_token({"FRUGAL_ADMIN_TOKEN_FILE": str(path)})
    assert token == path.read_text().strip() and len(token) > 32
    assert load_admin_token({}, default_file=path) == token
    ensure_admin_token_file(path)
    assert load_admin_token({}, default_file=path) == token


def test_admin_token_missing_or_short_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AdminTokenError, match="FRUGAL_ADMIN_TOKEN"):
        load_admin_token({}, default_file=tmp_path / "absent")
    with pytest.raises(AdminTokenError, match="at least"):
        load_admin_token({"FRUGAL_ADMIN_TOKEN": "short"})
