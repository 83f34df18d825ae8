"""The control-plane process: desired state -> snapshot -> ADS server.

I/O edge: reads the config and the API descriptor, runs the pure translation,
publishes the snapshot, serves it over ADS on grpc.aio.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from importlib import resources

import grpc

from control_plane.model import FrugalConfig
from control_plane.translate import translate
from control_plane.xds.cache import SnapshotCache
from control_plane.xds.server import ADS_SERVER_OPTIONS, AdsServicer, add_ads_servicer
from control_plane.xds.snapshot import Snapshot

log = logging.getLogger(__name__)


def api_descriptor() -> bytes:
    """The frugal.v1 descriptor set written by proto/generate.py."""
    return resources.files("frugal.v1").joinpath("inference.pb").read_bytes()


def build_snapshot(config: FrugalConfig, created: int) -> Snapshot:
    envoy = translate(config, api_descriptor(), created)
    return Snapshot.of([*envoy.listeners, *envoy.routes, *envoy.clusters, *envoy.endpoints])


def with_live_weights(config: FrugalConfig, live: Mapping[str, Mapping[str, int]]) -> FrugalConfig:
    """The config Envoy gets: each balanced model's group weights as its policy set them."""
    models = []
    for model in config.models:
        weights = live.get(model.name)
        if weights is None:
            models.append(model)
            continue
        groups = tuple(
            group.model_copy(update={"weight": weights.get(group.name, 0)})
            for group in model.groups
        )
        models.append(model.model_copy(update={"groups": groups}))
    return config.model_copy(update={"models": tuple(models)})


class ControlPlane:
    """The running control plane: its cache, its ADS servicer and its gRPC server.

    `config` is the desired state (frugal.yaml plus run-time fleet changes);
    `live_weights` are the balancer's current route weights, laid over it when a
    snapshot is built.
    """

    def __init__(self, config: FrugalConfig, created: int | None = None) -> None:
        self.config = config
        self.live_weights: dict[str, dict[str, int]] = {}
        # The model cards' `created`: every replica of one fleet uses the same
        # (shared_state.shared_created), so their snapshots are identical.
        self.started_at = int(time.time()) if created is None else created
        self.cache = SnapshotCache(build_snapshot(config, self.started_at))
        self.server = grpc.aio.server(options=ADS_SERVER_OPTIONS)
        self.ads: AdsServicer = add_ads_servicer(self.server, self.cache)
        self.xds_port = 0

    async def start(self, xds_port: int | None = None, host: str | None = None) -> int:
        port = self.config.control_plane.xds_port if xds_port is None else xds_port
        host = self.config.control_plane.host if host is None else host
        self.xds_port = self.server.add_insecure_port(f"{host}:{port}")
        await self.server.start()
        log.info("ADS serving on %s:%d", host, self.xds_port)
        return self.xds_port

    def publish(self, config: FrugalConfig) -> None:
        """Serve a new desired state; an inconsistent one is refused and the old one stays."""
        served = with_live_weights(config, self.live_weights)
        self.cache.set_snapshot(build_snapshot(served, self.started_at))
        self.config = config

    def set_live_weights(self, model: str, weights: Mapping[str, int]) -> None:
        self.live_weights[model] = dict(weights)
        self.publish(self.config)

    def clear_live_weights(self, model: str) -> None:
        if self.live_weights.pop(model, None) is not None:
            self.publish(self.config)

    async def stop(self) -> None:
        await self.server.stop(grace=1)
