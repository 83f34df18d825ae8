"""The engines every compared system shares, and Frugal's config in front of them (pure layer).

One model, one replica group of tp2 sim workers (SIMULATOR.md), or the addresses of engines
that already run (any backend). Frugal's two variants differ only in `enforce`: the full
chain (keys, rate limits, token quotas, the default content policy on prompts and output)
or parse-and-route only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from frugal.bench.fleet import PROFILES, TP2, gateway_config

GROUP = "engines"
PROFILE = "bench"
JITTER = 0.02  # small and seeded: runs are reproducible


@dataclass(frozen=True)
class GatewayPorts:
    listener: int
    xds: int
    envoy_admin: int
    safety_filter: int
    safety_metrics: int
    admin: int
    redis: int


def sim_profile(time_scale: float) -> dict[str, float | int]:
    return {**PROFILES[TP2], "time_scale": time_scale, "jitter": JITTER, "seed": 0}


def engines_config(model: str, engines: Sequence[str], time_scale: float) -> dict[str, Any]:
    """The part of frugal.yaml that names the engines (enough to plan their workers)."""
    return {
        "profiles": {PROFILE: sim_profile(time_scale)},
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
    *,
    enforce: bool,
    time_scale: float,
    redis_dir: str,
) -> dict[str, Any]:
    """frugal.yaml for one Frugal variant in front of `engines`."""
    safety_filter = {
        "port": ports.safety_filter,
        "metrics_port": ports.safety_metrics,
        "enforce": enforce,
    }
    return {
        **gateway_config(
            ports, node_id="frugal-compare", safety_filter=safety_filter, redis_dir=redis_dir
        ),
        **engines_config(model, engines, time_scale),
    }


def litellm_config(model: str, api_base: str, master_key: str) -> dict[str, Any]:
    """LiteLLM proxy's config: one OpenAI-compatible deployment, Frugal's bare route, and a
    master key (the proxy refuses to start without one)."""
    return {
        "general_settings": {"master_key": master_key},
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": api_base,
                    "api_key": "unused",
                },
            }
        ],
    }
