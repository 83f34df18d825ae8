"""`python -m engine_workers`: run one engine worker from FRUGAL_ENGINE_* settings (wiring).

SIGTERM and SIGINT start a graceful stop (health NOT_SERVING, drain, exit).
"""

from __future__ import annotations

import asyncio
import os
import signal

from engine_workers.server import serve
from engine_workers.settings import EngineSettings
from frugal.request_log import configure_logging


async def _main(settings: EngineSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop)


def main() -> None:
    configure_logging(os.environ.get("FRUGAL_LOG_LEVEL", "INFO"))
    asyncio.run(_main(EngineSettings()))


if __name__ == "__main__":
    main()
