"""`python -m safety_filter`: run the safety filter until SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from safety_filter.server import start_server
from safety_filter.settings import SafetyFilterSettings

log = logging.getLogger("safety_filter")


async def run(settings: SafetyFilterSettings) -> None:
    server, port = await start_server(settings)
    log.info(
        "safety filter serving ext_proc on %s:%d for models %s",
        settings.host,
        port,
        sorted(settings.models),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=2)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(SafetyFilterSettings()))


if __name__ == "__main__":
    main()
