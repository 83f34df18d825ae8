"""The loopback ports a `frugal up` stack binds, and the refusal of two parts on one port
(pure layer).

Every part of the stack has a port of its own in frugal.yaml, and some take a range: the
safety filter's processes take port, port+1, ...; each engine worker its gRPC port and that
port + 1000 for metrics. Nothing stops two of these from meeting (e.g. 11 safety filter
processes from 50051 reach the first engine's 50061), and the second to bind would fail
at start with an error that names neither; this check names both before anything starts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from control_plane.model import FrugalConfig
from frugal.wire import engine_metrics_port


def stack_ports(config: FrugalConfig, *, engines: bool = True) -> list[tuple[int, str]]:
    """(port, what binds it) for every port the stack's own processes bind."""
    ports = [
        (config.listener.port, "listener.port"),
        (config.envoy.admin_port, "envoy.admin_port"),
        (config.control_plane.xds_port, "control_plane.xds_port"),
        (config.admin.port, "admin.port"),
    ]
    if config.control_plane.metrics_port:
        ports.append((config.control_plane.metrics_port, "control_plane.metrics_port"))
    safety = config.safety_filter
    for index, port in enumerate(safety.ports()):
        ports.append((port, f"safety_filter.port (process {index})"))
        if safety.metrics_port:
            ports.append((safety.metrics_port + index, f"safety_filter.metrics_port ({index})"))
    if config.redis.managed:
        ports.append((urlsplit(config.redis.url).port or 6379, "redis.url"))
    if engines:
        for model in config.models:
            for group in model.groups:
                for endpoint in group.replicas:
                    where = f"models.{model.name}.groups.{group.name}.replicas {endpoint}"
                    ports.append((endpoint.port, where))
                    ports.append((engine_metrics_port(endpoint.port), f"{where} (metrics)"))
    return ports


def check_stack_ports(config: FrugalConfig, *, engines: bool = True) -> None:
    """Raise ValueError naming the first two parts of the stack that share a port."""
    owners: dict[int, str] = {}
    for port, owner in stack_ports(config, engines=engines):
        first = owners.setdefault(port, owner)
        if first != owner:
            raise ValueError(f"port {port} is taken twice: by {first} and by {owner}")
