"""Settings of the safety filter process (env prefix FRUGAL_SAFETY_)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from frugal.keys.store import DEFAULT_CACHE_ENTRIES, MAX_CACHE_TTL_S
from frugal.wire import DEFAULT_SAFETY_FILTER_PORT
from safety_filter.extproc.policies import CACHE_TTL_S


class SafetyFilterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRUGAL_SAFETY_", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_SAFETY_FILTER_PORT, ge=0, le=65535)
    # The models the gateway serves; a request for any other gets 404 model_not_found.
    models: frozenset[str] = frozenset()
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    # {"default": policy, "models": {name: policy}} (frugal.yaml's content policies).
    policies: dict[str, Any] = Field(default_factory=dict)
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="FRUGAL_REDIS_URL")
    # frugal.yaml's redis.cluster: `redis_url` is any node of a Redis Cluster.
    redis_cluster: bool = Field(default=False, validation_alias="FRUGAL_REDIS_CLUSTER")
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no metrics endpoint
    # false: parse and route only, no content checks or token accounting (benchmarks).
    enforce: bool = True
    # frugal.yaml's safety_filter.rate_limit: `inline` checks the rpm in the admission
    # script; `envoy` leaves it to Envoy's global rate limit filter.
    rate_limit: Literal["inline", "envoy"] = "inline"
    admitting: int = Field(default=256, ge=1)
    admit_wait_s: float = Field(default=2.0, gt=0)
    # frugal.yaml's safety_filter.prefix_block_chars (frugal.prefix_key).
    prefix_block_chars: int = Field(default=2048, ge=16)
    # Key records are cached this long at most: with the background refresh's round trip,
    # a revocation is honoured within 1 s (tests/integration/test_cache_refresh.py).
    key_cache_ttl_s: float = Field(default=MAX_CACHE_TTL_S, gt=0, le=MAX_CACHE_TTL_S)
    # Policy overrides are cached this long at most: an admin change applies within ~1 s.
    policy_cache_ttl_s: float = Field(default=CACHE_TTL_S, gt=0, le=CACHE_TTL_S)
    # Entries of each cache (key records, policy overrides; least recently used evicted):
    # about 1.7 KB per key record measured, so ~17 MB at the default. Keys in use beyond
    # it cost a Redis round trip per lookup, never unbounded memory.
    cache_entries: int = Field(default=DEFAULT_CACHE_ENTRIES, ge=1)
