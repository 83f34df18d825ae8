"""Filling in Envoy's bootstrap template (envoy/bootstrap.yaml); pure apart from reading it.

The bootstrap holds what cannot come over xDS: the node, the admin address (loopback
unless `envoy.admin_host` says otherwise), the control plane, and the overload manager
(its heap and connection bounds from `envoy`)."""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from control_plane.model import Endpoint, FrugalConfig
from frugal.cli.stack import REPO_ROOT

TEMPLATE = REPO_ROOT / "envoy" / "bootstrap.yaml"


def xds_endpoints(config: FrugalConfig, xds_port: int | None = None) -> list[Endpoint]:
    """The control-plane replicas Envoy dials: `envoy.xds_addresses`, else the one
    control plane of `control_plane.host` and its xDS port (or `xds_port`)."""
    if config.envoy.xds_addresses:
        return [Endpoint.parse(address) for address in config.envoy.xds_addresses]
    port = config.control_plane.xds_port if xds_port is None else xds_port
    return [Endpoint(host=config.control_plane.host, port=port)]


def render_bootstrap(config: FrugalConfig, xds_port: int | None = None) -> str:
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}}}
        for e in xds_endpoints(config, xds_port)
    ]
    return Template(TEMPLATE.read_text()).substitute(
        node_id=config.envoy.node_id,
        admin_host=config.envoy.admin_host,
        admin_port=config.envoy.admin_port,
        max_heap_bytes=config.envoy.max_heap_bytes,
        max_downstream_connections=config.envoy.max_downstream_connections,
        xds_endpoints=json.dumps(endpoints),  # JSON is YAML's flow style
    )


def write_bootstrap(config: FrugalConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_bootstrap(config))
