"""The engines every compared system shares, and Frugal's config in front of them (pure layer).

One model, one replica group of tp2 sim workers (docs/simulator.md), or the addresses of engines
that already run (any backend). Frugal's variants (VARIANTS) differ only in the safety
filter's section: the full chain (keys, rate limits, token quotas, the default content
policy on prompts and output), the same without content checks (so the output redactor's
hold-back shows apart), the same with Envoy's global rate limit call kept (design B of
issue 10), or parse-and-route only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from control_plane.model import SafetyFilterConfig
from frugal.bench.fleet import PROFILES, TP2, gateway_config

GROUP = "engines"
PROFILE = "bench"
JITTER = 0.02  # small and seeded: runs are reproducible
FULL, NOREDACT, RLS, BARE = "frugal", "frugal-noredact", "frugal-rls", "frugal-bare"
RATE_LIMIT_SETTING = "rate_limit"  # safety_filter.rate_limit: "inline" (default) or "envoy"
# A near-instant prefill for long prompts, as the GIE measurement's backend: otherwise
# 35k-token prompts queue for the KV budget and the engine, not the gateway, sets TTFT.
LONG_PROMPT_SIM = {"c_ms": 0.0, "kv_budget_tokens": 1 << 26}
# The full chain with every check but the output's (and so without its hold-back).
NO_OUTPUT_CHECKS: dict[str, Any] = {"check_output": False}
# The benchmark's key has limits, so they are checked and counted on every request, far
# above what a benchmark sends, so none is ever refused (the chain's cost, not refusals).
BENCH_KEY_SPEC: dict[str, Any] = {
    "name": "bench", "tenant": "bench", "rpm": 100_000_000, "tpm": 100_000_000_000,
}  # fmt: skip


@dataclass(frozen=True)
class FrugalVariant:
    """What one Frugal system sets in frugal.yaml's `safety_filter` section."""

    enforce: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""


VARIANTS: dict[str, FrugalVariant] = {
    FULL: FrugalVariant(
        description="Envoy with the full safety chain: an API key with rpm "
        f"{BENCH_KEY_SPEC['rpm']:,} and tpm {BENCH_KEY_SPEC['tpm']:,} (checked and counted, "
        "never reached), the token quota, the default content policy on prompts and on "
        "streamed output"
    ),
    NOREDACT: FrugalVariant(
        settings={"content_policy": NO_OUTPUT_CHECKS},
        description="the full chain with the output checks off (key, limits, quota and "
        "prompt checks as `frugal`; no output redaction, so no hold-back)",
    ),
    RLS: FrugalVariant(
        settings={RATE_LIMIT_SETTING: "envoy"},
        description="the full chain with Envoy's global rate limit call to the safety "
        "filter kept (`safety_filter.rate_limit: envoy`, design B)",
    ),
    BARE: FrugalVariant(
        enforce=False, description="Envoy with the chain off (parse and route only)"
    ),
}


def rate_limit_setting_exists() -> bool:
    """Whether this Frugal's config knows `safety_filter.rate_limit` (frugal-rls needs it)."""
    return RATE_LIMIT_SETTING in SafetyFilterConfig.model_fields


@dataclass(frozen=True)
class GatewayPorts:
    listener: int
    xds: int
    envoy_admin: int
    safety_filter: int
    safety_metrics: int
    admin: int
    redis: int


def sim_profile(time_scale: float, *, long_prompts: bool = False) -> dict[str, float | int]:
    profile = {**PROFILES[TP2], "time_scale": time_scale, "jitter": JITTER, "seed": 0}
    return {**profile, **LONG_PROMPT_SIM} if long_prompts else profile


def engines_config(
    model: str, engines: Sequence[str], time_scale: float, *, long_prompts: bool = False
) -> dict[str, Any]:
    """The part of frugal.yaml that names the engines (enough to plan their workers)."""
    return {
        "profiles": {PROFILE: sim_profile(time_scale, long_prompts=long_prompts)},
        "models": [
            {
                "name": model,
                "groups": [{"name": GROUP, "profile": PROFILE, "replicas": list(engines)}],
            }
        ],
    }


def frugal_config(
    model: str,
    engines: Sequence[str],
    ports: GatewayPorts,
    variant: FrugalVariant,
    *,
    time_scale: float,
    redis_dir: str,
    safety_processes: int = 1,
    max_request_bytes: int | None = None,
) -> dict[str, Any]:
    """frugal.yaml for one Frugal variant in front of `engines`. The safety filter's
    processes serve `ports.safety_filter` onwards, their metrics `ports.safety_metrics`
    onwards (consecutive ports)."""
    safety_filter = {
        "port": ports.safety_filter,
        "metrics_port": ports.safety_metrics,
        "enforce": variant.enforce,
        "processes": safety_processes,
        **variant.settings,
    }
    config = {
        **gateway_config(
            ports, node_id="frugal-compare", safety_filter=safety_filter, redis_dir=redis_dir
        ),
        **engines_config(model, engines, time_scale),
    }
    if max_request_bytes is not None:
        config["listener"] = {**config["listener"], "max_request_bytes": max_request_bytes}
    return config


# Per-deployment limits LiteLLM enforces (usage-based-routing-v2 counts every request in its
# router cache and refuses beyond them): on, and far above what a benchmark sends.
LITELLM_RPM = 1_000_000
LITELLM_TPM = 1_000_000_000


def litellm_config(model: str, api_base: str, master_key: str) -> dict[str, Any]:
    """LiteLLM proxy's config: one OpenAI-compatible deployment (Frugal's bare route) with
    rpm and tpm limits, the routing strategy that enforces them, and a master key checked
    on every request. Virtual keys with their own limits need LiteLLM's Postgres database,
    which is not here."""
    return {
        "general_settings": {"master_key": master_key},
        "router_settings": {"routing_strategy": "usage-based-routing-v2"},
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": api_base,
                    "api_key": "unused",
                    "rpm": LITELLM_RPM,
                    "tpm": LITELLM_TPM,
                },
            }
        ],
    }
