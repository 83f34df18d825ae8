"""`python -m control_plane`: serve frugal.yaml over ADS, and the admin REST, until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import redis.asyncio as aioredis

from control_plane.admin.app import create_admin_app
from control_plane.admin.policies import policies_router
from control_plane.admin.usage import usage_router
from control_plane.admin_server import AdminServer
from control_plane.config_file import ConfigError, load_config
from control_plane.server import ControlPlane
from control_plane.settings import ControlPlaneSettings
from frugal.keys import KeyStore
from frugal.keys.admin_token import AdminTokenError, load_admin_token
from frugal.keys.hashing import PepperError, load_peppers

log = logging.getLogger("control_plane")


async def run(settings: ControlPlaneSettings) -> None:
    config = load_config(settings.config)
    redis = aioredis.Redis.from_url(settings.redis_url)
    store = KeyStore(redis, load_peppers())
    admin = AdminServer(
        create_admin_app(store, load_admin_token(), [usage_router(redis), policies_router(redis)]),
        config.admin.host,
        config.admin.port,
    )
    control_plane = ControlPlane(config)
    await control_plane.start(settings.xds_port)
    await admin.start()
    log.info("admin REST on http://%s:%d/admin/docs", config.admin.host, config.admin.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await admin.stop()
    await control_plane.stop()
    await redis.aclose()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(ControlPlaneSettings()))
    except (ConfigError, PepperError, AdminTokenError) as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
