"""Clusters and endpoints: one EDS cluster per replica group, plus the safety filter.

Pure layer. Engine clusters speak HTTP/2 (gRPC), pick the least-loaded replica,
and find dead ones fast: gRPC health checks every second even without traffic
(`no_traffic_interval`, default 60 s) and outlier detection on gateway errors
(ENVOY_NOTES: a SIGKILLed replica then costs 0-1 of the next 40 requests). A model with
`prefix_routing` balances its groups with Maglev on the prompt's prefix key instead, with
bounded loads (`hash_balance_factor`), and gives each group a second, least-request cluster
on the same endpoint assignment for requests without a key (a prompt shorter than one
block). Each of the two health-checks and ejects on its own: a dead replica is found by
both within the same second.

Envoy merges health changes (a check passed or failed, an outlier ejected, an endpoint
draining) for `update_merge_window`, 1 s by default, before its worker threads' balancers see
them; its admin `/clusters` shows them at once. A change that comes more than a window after
the previous one is delivered at once, so the gap shows when replicas change together: at a
start where the engine workers were still binding as Envoy warmed their cluster, the first
checks fail, and of two replicas that then pass within a second the second is listed healthy
up to a second before it takes requests (seen as 64 streams all on one of two replicas, with
`cluster_manager.cluster_updated_via_merge` counting the merge only after they had started).
Tests that need every replica to take requests wait until each has served one
(tests/helpers/replica_spread.py; the compose test does the same). Envoy's default is kept: it
batches the balancer rebuilds that many changes at once cost every worker thread (a group
restarted, a Maglev table of 65,537 entries each time), and it costs a replica at most a
second before its first request; a change after a quiet second, such as a replica's death,
is delivered at once.

The safety filter's cluster is health-checked the same way (grpc.health.v1, which it
serves once bound): a filter replica that DNS lists before it serves (a scale-up or a
restart) gets no ext_proc stream until its first check passes, so its start does not
turn requests into fail-closed 503s. With no healthy filter at all, Envoy's panic mode
still tries them, and the request fails closed as before.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from control_plane.model import (
    Endpoint,
    FrugalConfig,
    Model,
    ReplicaGroup,
    engine_cluster_name,
    unkeyed_cluster_name,
)
from control_plane.translate import messages as m
from control_plane.translate.listener import ADS, INFERENCE_SERVICE
from control_plane.translate.policy_filters import SAFETY_FILTER_CLUSTER

# Streams are long-lived and many: Envoy's default circuit breakers (1024 requests,
# 3 concurrent retries) would turn a burst or a replica failure into 503s.
CIRCUIT_BREAKERS: dict[str, Any] = {
    "thresholds": [
        {
            "priority": "DEFAULT",
            "max_connections": 10_000,
            "max_pending_requests": 10_000,
            "max_requests": 100_000,
            "max_retries": 1_000,
        }
    ]
}


def _grpc_health_checks(service_name: str) -> list[dict[str, Any]]:
    """One check a second, with or without traffic; one result flips the state."""
    return [
        {
            "timeout": "1s",
            "interval": "1s",
            "no_traffic_interval": "1s",
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": service_name},
        }
    ]


def _socket_address(endpoint: Endpoint) -> dict[str, Any]:
    return {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}}


def _lb_endpoints(endpoints: tuple[Endpoint, ...]) -> list[dict[str, Any]]:
    """A draining replica stays known to Envoy (its streams finish) but gets no new
    requests: EDS health status DRAINING."""
    return [
        {
            "endpoint": {"address": _socket_address(e)},
            **({"health_status": "DRAINING"} if e.draining else {}),
        }
        for e in endpoints
    ]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build_engine_clusters(model: Model, group: ReplicaGroup) -> tuple[m.Cluster, ...]:
    """The group's cluster; for a prefix-routed model, Maglev on the prefix key, plus the
    least-request sibling for requests without a key, on the same endpoint assignment."""
    name = engine_cluster_name(model.name, group.name)
    if model.prefix_routing is None:
        return (_engine_cluster(name, name, {"lb_policy": "LEAST_REQUEST"}),)
    factor = model.prefix_routing.hash_balance_factor
    hashed = {
        "lb_policy": "MAGLEV",
        "common_lb_config": {"consistent_hashing_lb_config": {"hash_balance_factor": factor}},
    }
    unkeyed = unkeyed_cluster_name(model.name, group.name)
    return (
        _engine_cluster(name, name, hashed),
        _engine_cluster(unkeyed, name, {"lb_policy": "LEAST_REQUEST"}),
    )


def _engine_cluster(name: str, assignment: str, balancing: dict[str, Any]) -> m.Cluster:
    """An engine cluster on the endpoint assignment (EDS service name) `assignment`."""
    return m.parse(
        {
            "name": name,
            "type": "EDS",
            "eds_cluster_config": {"eds_config": ADS, "service_name": assignment},
            "connect_timeout": "1s",
            **balancing,
            "typed_extension_protocol_options": m.http2_protocol_options(),
            "circuit_breakers": CIRCUIT_BREAKERS,
            "health_checks": _grpc_health_checks(INFERENCE_SERVICE),
            "outlier_detection": {
                "consecutive_gateway_failure": 1,
                "enforcing_consecutive_gateway_failure": 100,
                "consecutive_5xx": 5,
                "interval": "1s",
                "base_ejection_time": "5s",
                "max_ejection_percent": 100,
            },
        },
        m.Cluster,
    )


def build_load_assignment(model: Model, group: ReplicaGroup) -> m.ClusterLoadAssignment:
    return m.parse(
        {
            "cluster_name": engine_cluster_name(model.name, group.name),
            "endpoints": [{"lb_endpoints": _lb_endpoints(group.replicas)}],
        },
        m.ClusterLoadAssignment,
    )


def build_safety_filter_cluster(config: FrugalConfig) -> m.Cluster:
    endpoints = tuple(
        Endpoint(host=config.safety_filter.host, port=port) for port in config.safety_filter.ports()
    )
    return m.parse(
        {
            "name": SAFETY_FILTER_CLUSTER,
            "type": "STATIC" if _is_ip(config.safety_filter.host) else "STRICT_DNS",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": m.http2_protocol_options(
                max_concurrent_streams=100_000
            ),
            # One ext_proc stream per HTTP request (ENVOY_NOTES): raise the breakers.
            "circuit_breakers": CIRCUIT_BREAKERS,
            "health_checks": _grpc_health_checks(""),  # the server's overall status
            "load_assignment": {
                "cluster_name": SAFETY_FILTER_CLUSTER,
                "endpoints": [{"lb_endpoints": _lb_endpoints(endpoints)}],
            },
        },
        m.Cluster,
    )
