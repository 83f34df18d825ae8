"""Key records (frugal.keys.record): validity over time, grants, and what the API may show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from frugal.keys.record import KeyRecord, KeySpec, KeyStatus

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def record(**fields: Any) -> KeyRecord:
    base: dict[str, Any] = {
        "id": "AAAAAAAAAAAA",
        "name": "n",
        "tenant": "acme",
        "created_at": T0,
        "secret_hash": "f" * 64,
        "pepper_version": 1,
    }
    return KeyRecord(**{**base, **fields})


def test_a_plain_key_is_active_forever() -> None:
    assert record().status(T0 + timedelta(days=10_000)) is KeyStatus.ACTIVE


def test_expiry_starts_at_expires_at() -> None:
    key = record(expires_at=T0 + timedelta(hours=1))
    assert key.status(T0 + timedelta(minutes=59)) is KeyStatus.ACTIVE
    assert key.status(T0 + timedelta(hours=1)) is KeyStatus.EXPIRED
    assert not key.usable(T0 + timedelta(hours=2))


def test_a_rotated_key_works_until_valid_until() -> None:
    key = record(replaced_by="BBBBBBBBBBBB", valid_until=T0 + timedelta(seconds=300))
    assert key.status(T0) is KeyStatus.ROTATING and key.usable(T0)
    assert key.status(T0 + timedelta(seconds=300)) is KeyStatus.EXPIRED


def test_revocation_wins_over_everything() -> None:
    key = record(revoked=True, valid_until=T0 + timedelta(days=1))
    assert key.status(T0) is KeyStatus.REVOKED


def test_earlier_expiry_wins_over_a_rotation_overlap() -> None:
    key = record(expires_at=T0 + timedelta(seconds=10), valid_until=T0 + timedelta(seconds=300))
    assert key.status(T0 + timedelta(seconds=20)) is KeyStatus.EXPIRED


def test_models_grant() -> None:
    assert record().allows_model("anything")
    assert record(models=["a"]).allows_model("a")
    assert not record(models=["a"]).allows_model("b")


def test_view_has_no_hash_and_a_status() -> None:
    view = record().view(T0)
    dumped = view.model_dump()
    assert "secret_hash" not in dumped and "pepper_version" not in dumped
    assert dumped["status"] == "active"


def test_spec_normalises_times_and_models() -> None:
    spec = KeySpec.model_validate(
        {
            "name": " n ",
            "tenant": "acme",
            "models": ["a", "b", "a"],
            "expires_at": "2030-01-01T01:00",
        }
    )
    assert spec.name == "n"
    assert spec.models == ["a", "b"]
    assert spec.expires_at == T0 + timedelta(hours=1)
    offset = KeySpec.model_validate(
        {"name": "n", "tenant": "t", "expires_at": "2030-01-01T02:00:00+01:00"}
    )
    assert offset.expires_at == T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tenant": "has space"}, "tenant"),
        ({"tenant": ""}, "tenant"),
        ({"models": ["a,b"]}, "models"),
        ({"models": ["*"]}, "models"),
        ({"models": []}, "models"),
        ({"rpm": 0}, "rpm"),
        ({"tpm": -1}, "tpm"),
        ({"name": "  "}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_spec_refuses_bad_fields(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeySpec(**{"name": "n", "tenant": "acme", **fields})
    assert caught.value.errors()[0]["loc"][0] == field
