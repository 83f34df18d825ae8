"""Settings of one engine worker, from `FRUGAL_ENGINE_*` environment variables (wiring layer).

`FRUGAL_ENGINE_PARAMETERS` (a JSON object) is the replica group's profile from frugal.yaml,
read by the backend that `FRUGAL_ENGINE_BACKEND` names (its `parameters` model). For the
simulator, the profile's fields are laid over the built-in profile named
`FRUGAL_ENGINE_PROFILE` (SimProfile's defaults for any other name), then the fields of
`FRUGAL_ENGINE_SIM` over those, e.g.
`FRUGAL_ENGINE_PROFILE=tp8 FRUGAL_ENGINE_SIM='{"time_scale": 10}'`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine_workers.backends import BACKENDS
from engine_workers.backends.sim_model import PROFILES, SimProfile
from engine_workers.usage_log import MAX_AGE_SECONDS, MAX_ENTRIES
from frugal.wire import DEFAULT_ENGINE_PORT


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUGAL_ENGINE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_ENGINE_PORT, ge=0, le=65535)  # 0: any free port
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics endpoint
    model: str = "frugal-sim"
    group: str = "default"  # replica group, a metrics label
    backend: str = "sim"
    # Stream the last user message back instead of generating text.
    echo: bool = False
    profile: str = "tp2"
    parameters: dict[str, Any] = Field(default_factory=dict)
    sim: SimProfile = Field(default_factory=lambda: PROFILES["tp2"])
    grace_seconds: float = Field(default=5.0, ge=0)
    # The usage log (engine_workers.usage_log): how many requests' usage it keeps, and for
    # how long after each ended, for the gateway to ask about streams its client left.
    usage_records: int = Field(default=MAX_ENTRIES, ge=1)
    usage_record_seconds: float = Field(default=MAX_AGE_SECONDS, gt=0)
    # While a stream has no token yet: its response headers after this long, then an SSE
    # comment every interval (frugal.yaml `streams` says why; `frugal up` passes them).
    headers_after_s: float = Field(default=0.5, gt=0)
    keepalive_interval_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _overlay_sim_on_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if isinstance(data.get("sim"), SimProfile):
            return data
        base = PROFILES.get(str(data.get("profile", "tp2")), SimProfile()).model_dump()
        # A group profile is the simulator's only for the sim backend; others read their own.
        profile = data.get("parameters") if data.get("backend", "sim") == "sim" else None
        return {
            **data,
            "sim": {**base, **_fields(profile, "parameters"), **_fields(data.get("sim"), "sim")},
        }

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; known: {sorted(BACKENDS)}")
        return value


def _fields(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value
