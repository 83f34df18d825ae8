"""Filling in Envoy's bootstrap template (envoy/bootstrap.yaml); pure apart from reading it."""

from __future__ import annotations

from pathlib import Path
from string import Template

from control_plane.model import FrugalConfig
from frugal.cli.stack import REPO_ROOT

TEMPLATE = REPO_ROOT / "envoy" / "bootstrap.yaml"


def render_bootstrap(config: FrugalConfig, xds_port: int | None = None) -> str:
    return Template(TEMPLATE.read_text()).substitute(
        node_id=config.envoy.node_id,
        admin_port=config.envoy.admin_port,
        xds_host=config.control_plane.host,
        xds_port=config.control_plane.xds_port if xds_port is None else xds_port,
    )


def write_bootstrap(config: FrugalConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_bootstrap(config))
