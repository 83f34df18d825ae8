"""Settings of the control-plane process (env prefix FRUGAL_CP_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUGAL_CP_", frozen=True)

    config: Path = Path("frugal.yaml")
    # Override frugal.yaml's xDS port (0 = any free port, for tests).
    xds_port: int | None = None
    # Relative paths in the config (access_log.path) are under this directory;
    # `frugal up` sets the one that holds its var/.
    base_dir: Path = Path(".")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="FRUGAL_REDIS_URL")
    # frugal.yaml's redis.cluster: `redis_url` is any node of a Redis Cluster.
    redis_cluster: bool = Field(default=False, validation_alias="FRUGAL_REDIS_CLUSTER")
    # Where xDS, the admin REST and /metrics listen, when not on the hosts frugal.yaml gives
    # for reaching them: in a container, 0.0.0.0, while Envoy dials the service's name.
    bind_host: str | None = None
