"""The heterogeneous fleet of the ScaleLLM paper's section 6, and one frugal.yaml per policy.

Pure layer: builds the config dict a stack is started from; ports are chosen by the caller.
One model, two replica groups: one `tp8` replica (8 GPUs, lower step time, one queue) and four
`tp2` replicas (2 GPUs each, slower steps, four queues); profiles from docs/simulator.md (a, b,
max batch) and frugal.yaml (c, the prefill cost per prompt token).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from control_plane.model import engine_cluster_name

MODEL = "sim-routing"
TP8, TP2 = "tp8", "tp2"
TP2_REPLICAS = 4
# Outputs long enough that max_tokens always decides the length (sim_model.natural_length).
_OUTPUT_TOKENS = {"output_tokens_min": 4096, "output_tokens_max": 4096}
PROFILES: dict[str, dict[str, float | int]] = {
    TP8: {"a_ms": 5.0, "b_ms": 0.10, "c_ms": 0.0125, "max_batch": 256, **_OUTPUT_TOKENS},
    TP2: {"a_ms": 8.4, "b_ms": 0.13, "c_ms": 0.03, "max_batch": 128, **_OUTPUT_TOKENS},
}
JITTER = 0.02  # small and seeded (docs/simulator.md): runs are reproducible

# Each policy: its balancer config and the groups' weights (for the dynamic policies, the
# weights they start from; until a balancer loop changes them they behave like static).
BANDS = {
    "type": "concurrency_bands",
    "threshold": 64,  # the paper's crossover, 50-64 requests in flight (docs/simulator.md)
    "hysteresis": 8,
    "low_load_group": TP8,
    "high_load_group": TP2,
}
POLICIES: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "static-tp8": ({"type": "static"}, {TP8: 100, TP2: 0}),
    "static-tp2": ({"type": "static"}, {TP8: 0, TP2: 100}),
    "concurrency_bands": (BANDS, {TP8: 100, TP2: 0}),
    "adaptive": ({"type": "adaptive", "min_share": 0.05, "forgetting": 0.98}, {TP8: 100, TP2: 0}),
    # `adaptive`, with each request's group picked by the request processor
    # (frugal.group_picker); the weights split only what it does not pick.
    "adaptive+picker": (
        {"type": "adaptive", "min_share": 0.05, "forgetting": 0.98, "group_picker": {}},
        {TP8: 100, TP2: 0},
    ),
}
STATIC_POLICIES = ("static-tp8", "static-tp2")
DYNAMIC_POLICY = "adaptive"
# The policies judged against the best static layout, each with its ratio column.
JUDGED_POLICIES = (DYNAMIC_POLICY, "adaptive+picker")


@dataclass(frozen=True)
class StackPorts:
    """Loopback ports of one stack; each engine also uses its metrics port
    (frugal.wire.engine_metrics_port)."""

    listener: int
    xds: int
    envoy_admin: int
    safety_filter: int
    admin: int
    redis: int
    tp8: tuple[int, ...]
    tp2: tuple[int, ...]


class GatewayPortsOf(Protocol):
    """The loopback ports every benchmark stack has, whatever else it runs."""

    @property
    def listener(self) -> int: ...
    @property
    def xds(self) -> int: ...
    @property
    def envoy_admin(self) -> int: ...
    @property
    def admin(self) -> int: ...
    @property
    def redis(self) -> int: ...


def gateway_config(
    ports: GatewayPortsOf, *, node_id: str, safety_filter: dict[str, Any], redis_dir: str
) -> dict[str, Any]:
    """The part of a benchmark stack's frugal.yaml every benchmark shares: its ports, a
    managed Redis of its own, and Envoy's local rate limit raised out of the way (the
    benchmarks drive far more than a default deployment admits)."""
    return {
        "listener": {"port": ports.listener},
        "control_plane": {"xds_port": ports.xds},
        "envoy": {"admin_port": ports.envoy_admin, "node_id": node_id},
        "safety_filter": safety_filter,
        "admin": {"port": ports.admin},
        "redis": {
            "url": f"redis://127.0.0.1:{ports.redis}/0",
            "managed": True,
            "data_dir": redis_dir,
        },
        "limits": {"local_requests_per_second": 1_000_000},
    }


def group_clusters() -> dict[str, str]:
    """Each group's Envoy cluster (for reading per-group request counters)."""
    return {group: engine_cluster_name(MODEL, group) for group in (TP8, TP2)}


def routing_config(
    policy: str, ports: StackPorts, *, time_scale: float, redis_dir: str
) -> dict[str, Any]:
    """frugal.yaml for one policy's stack. The safety chain is off (`enforce: false`: no keys,
    quotas or content checks) so the routing is measured alone."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {sorted(POLICIES)}")
    balancer, weights = POLICIES[policy]
    replicas = {TP8: ports.tp8, TP2: ports.tp2}
    profiles = {
        name: {**values, "time_scale": time_scale, "jitter": JITTER, "seed": index}
        for index, (name, values) in enumerate(PROFILES.items())
    }
    safety_filter = {"port": ports.safety_filter, "metrics_port": 0, "enforce": False}
    return {
        **gateway_config(
            ports, node_id="frugal-bench", safety_filter=safety_filter, redis_dir=redis_dir
        ),
        "profiles": profiles,
        "models": [
            {
                "name": MODEL,
                "balancer": balancer,
                "groups": [
                    {
                        "name": group,
                        "profile": group,
                        "weight": weights[group],
                        "replicas": [f"127.0.0.1:{port}" for port in replicas[group]],
                    }
                    for group in (TP8, TP2)
                ],
            }
        ],
    }
