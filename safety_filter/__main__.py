"""`python -m safety_filter`: run the safety filter until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from prometheus_client import start_http_server
from pydantic import ValidationError

from frugal.asyncio_metrics import watch_asyncio_tasks
from frugal.keys.hashing import PepperError, load_peppers
from frugal.request_log import configure_logging
from safety_filter.server import start_server
from safety_filter.settings import SafetyFilterSettings

log = logging.getLogger("safety_filter")


async def run(settings: SafetyFilterSettings) -> None:
    running = await start_server(settings, load_peppers())
    if settings.metrics_port:
        watch_asyncio_tasks(running.registry, asyncio.get_running_loop())
        start_http_server(settings.metrics_port, settings.host, registry=running.registry)
    log.info(
        "safety filter (ext_proc: keys, limits, content checks) on %s:%d for models %s",
        settings.host,
        running.port,
        sorted(settings.models),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


def main() -> None:
    configure_logging(os.environ.get("FRUGAL_LOG_LEVEL", "INFO"))
    try:
        asyncio.run(run(SafetyFilterSettings()))
    except (PepperError, ValidationError) as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":
    main()
