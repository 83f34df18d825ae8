"""`python -m control_plane`: serve frugal.yaml over ADS until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from control_plane.config_file import ConfigError, load_config
from control_plane.server import ControlPlane
from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("control_plane")


async def run(settings: ControlPlaneSettings) -> None:
    control_plane = ControlPlane(load_config(settings.config))
    await control_plane.start(settings.xds_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await control_plane.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(ControlPlaneSettings()))
    except ConfigError as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
