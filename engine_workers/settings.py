"""Settings of one engine worker, from `FRUGAL_ENGINE_*` environment variables (wiring layer).

The simulator's profile is the named `FRUGAL_ENGINE_PROFILE` (tp2 unless said otherwise) with
the fields of `FRUGAL_ENGINE_SIM` (a JSON object) laid over it, e.g.
`FRUGAL_ENGINE_PROFILE=tp8 FRUGAL_ENGINE_SIM='{"time_scale": 10}'`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine_workers.backends import BACKENDS
from engine_workers.backends.sim_model import SimProfile, named_profile


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUGAL_ENGINE_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)  # 0: any free port
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics endpoint
    model: str = "frugal-sim"
    group: str = "default"  # replica group, a metrics label
    backend: str = "sim"
    # Stream the last user message back instead of generating text.
    echo: bool = False
    profile: str = "tp2"
    sim: SimProfile = Field(default_factory=lambda: named_profile("tp2"))
    grace_seconds: float = Field(default=5.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _overlay_sim_on_profile(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        base = named_profile(str(data.get("profile", "tp2")))
        overrides = data.get("sim")
        if isinstance(overrides, SimProfile):
            return data
        if overrides is None:
            overrides = {}
        if not isinstance(overrides, dict):
            raise ValueError("sim must be a JSON object of SimProfile fields")
        return {**data, "sim": {**base.model_dump(), **overrides}}

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; known: {sorted(BACKENDS)}")
        return value
