"""`python -m control_plane`: ADS, the balancer loop and the admin REST, until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from redis.asyncio import Redis

from control_plane.access_log_rotation import AccessLogError, AccessLogRotator, prepare_access_log
from control_plane.admin.app import create_admin_app
from control_plane.admin.fleet import fleet_router
from control_plane.admin.policies import policies_router
from control_plane.admin.status import status_router
from control_plane.admin.usage import usage_router
from control_plane.admin_server import AdminServer
from control_plane.balancer_loop import BalancerLoop
from control_plane.config_file import ConfigError, load_config
from control_plane.dns_resolver import ReplicaResolver
from control_plane.fleet import Fleet
from control_plane.leadership import LeaderLease
from control_plane.load_sampler import LoadSampler
from control_plane.model import FrugalConfig
from control_plane.server import ControlPlane
from control_plane.settings import ControlPlaneSettings
from control_plane.shared_state import SharedWeights, shared_created
from frugal.asyncio_metrics import watch_asyncio_tasks
from frugal.group_lines_store import GroupLinesStore
from frugal.keys import KeyStore
from frugal.keys.admin_token import AdminTokenError, load_admin_token
from frugal.keys.hashing import PepperError, load_peppers
from frugal.process_name import process_name
from frugal.redis_connection import CONTROL_PLANE_CLIENT, redis_client
from frugal.redis_key_names import rename_old_keys

log = logging.getLogger("control_plane")


def envoy_admin_urls(config: FrugalConfig) -> tuple[str, ...]:
    local = f"http://127.0.0.1:{config.envoy.admin_port}"
    return config.control_plane.envoy_admin_urls or (local,)


def with_access_log(config: FrugalConfig, base_dir: Path) -> FrugalConfig:
    """The config with an absolute access-log path, whose file exists (Envoy needs both)."""
    access_log = config.access_log.under(base_dir.resolve())
    if access_log.enabled:
        prepare_access_log(Path(access_log.path))
    return config.model_copy(update={"access_log": access_log})


async def run(settings: ControlPlaneSettings) -> None:
    config = with_access_log(load_config(settings.config), settings.base_dir)
    redis = redis_client(settings.redis_url, settings.redis_cluster, name=CONTROL_PLANE_CLIENT)
    if isinstance(redis, Redis):  # older versions wrote one instance only
        renamed = await rename_old_keys(redis)
        if renamed:
            log.info("renamed %d Redis keys of an earlier Frugal to today's names", renamed)
    registry = CollectorRegistry()
    control_plane = ControlPlane(config, await shared_created(redis, int(time.time())))
    fleet = Fleet(config, redis, control_plane)
    await fleet.restore()
    sampler = LoadSampler(envoy_admin_urls(config))
    lease = LeaderLease(redis, process_name())
    balancer = BalancerLoop(
        control_plane,
        fleet,
        sampler,
        registry,
        lease=lease,
        shared=SharedWeights(redis),
        lines=GroupLinesStore(redis),
    )
    routers = [
        usage_router(redis),
        policies_router(redis),
        fleet_router(fleet, balancer),
        status_router(control_plane, balancer),
    ]
    admin = AdminServer(
        create_admin_app(KeyStore(redis, load_peppers()), load_admin_token(), routers),
        settings.bind_host or config.admin.host,
        config.admin.port,
    )
    await control_plane.start(settings.xds_port, settings.bind_host)
    await admin.start()
    if config.control_plane.metrics_port:
        metrics_host = settings.bind_host or config.control_plane.host
        watch_asyncio_tasks(registry, asyncio.get_running_loop())
        start_http_server(config.control_plane.metrics_port, metrics_host, registry)
    tasks = [asyncio.create_task(balancer.run())]
    resolver = ReplicaResolver(fleet)
    if resolver.enabled:
        tasks.append(asyncio.create_task(resolver.run()))
    rotator = AccessLogRotator(config.access_log, envoy_admin_urls(config))
    if config.access_log.enabled:
        tasks.append(asyncio.create_task(rotator.run()))
    log.info("admin REST on http://%s:%d/admin/docs", config.admin.host, config.admin.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await lease.release()
    await rotator.close()
    await admin.stop()
    await control_plane.stop()
    await sampler.close()
    await redis.aclose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: the load sampler polls Envoy and the engines 4x a second.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(run(ControlPlaneSettings()))
    except (ConfigError, AccessLogError, PepperError, AdminTokenError) as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
