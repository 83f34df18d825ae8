"""What an API key is allowed to do, and whether it may still be used.

Pure layer (pydantic models). `KeySpec` is what an admin asks for; `KeyRecord`
is what Redis holds (with the secret's hash, never the secret); `KeyView` is
what the admin API shows (no hash). Validity is a function of the record and a
clock, so it is tested without waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

# Tenants and model names travel in headers (comma lists) and rate-limit descriptors.
TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
ModelName = Annotated[str, StringConstraints(pattern=r"^[^\s,*]{1,200}$")]
KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Limit = Annotated[int, Field(gt=0)]


def utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyStatus(StrEnum):
    ACTIVE = "active"
    ROTATING = "rotating"  # replaced, still valid until `valid_until`
    EXPIRED = "expired"  # past `expires_at`, or past `valid_until` after a rotation
    REVOKED = "revoked"


class _UtcTimes(BaseModel):
    @field_validator("expires_at", "created_at", "last_used_at", "revoked_at", "valid_until",
                     mode="after", check_fields=False)  # fmt: skip
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)


class KeySpec(_UtcTimes):
    """The grants and limits of a key, as an admin asks for them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: KeyName
    tenant: TenantName
    # None: every model the gateway serves.
    models: Annotated[list[ModelName], Field(min_length=1, max_length=1000)] | None = None
    rpm: Limit | None = None  # requests per minute; None: unlimited
    tpm: Limit | None = None  # tokens per minute; None: unlimited
    expires_at: datetime | None = None

    @field_validator("models", mode="after")
    @classmethod
    def _dedupe(cls, models: list[str] | None) -> list[str] | None:
        return None if models is None else list(dict.fromkeys(models))


class _KeyFields(_UtcTimes):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    tenant: str
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    expires_at: datetime | None = None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None
    # Rotation: the old record names its successor and stays valid until `valid_until`.
    replaced_by: str | None = None
    replaces: str | None = None
    valid_until: datetime | None = None


class KeyView(_KeyFields):
    """A key as the admin API shows it: never the secret, never its hash."""

    status: KeyStatus


class KeyRecord(_KeyFields):
    """A key as Redis holds it."""

    secret_hash: str
    pepper_version: int

    def status(self, now: datetime) -> KeyStatus:
        if self.revoked:
            return KeyStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return KeyStatus.EXPIRED
        if self.valid_until is not None:
            return KeyStatus.ROTATING if now < self.valid_until else KeyStatus.EXPIRED
        return KeyStatus.ACTIVE

    def usable(self, now: datetime) -> bool:
        return self.status(now) in (KeyStatus.ACTIVE, KeyStatus.ROTATING)

    def allows_model(self, model: str) -> bool:
        return self.models is None or model in self.models

    def spec(self) -> KeySpec:
        return KeySpec(
            name=self.name,
            tenant=self.tenant,
            models=self.models,
            rpm=self.rpm,
            tpm=self.tpm,
            expires_at=self.expires_at,
        )

    def view(self, now: datetime | None = None) -> KeyView:
        fields = self.model_dump(exclude={"secret_hash", "pepper_version"})
        return KeyView(**fields, status=self.status(now or utc_now()))
