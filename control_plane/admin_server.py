"""The admin REST server: the FastAPI app of control_plane/admin on uvicorn, in this process.

I/O edge. Runs on the control plane's event loop beside the ADS server, bound to
the admin address only (never behind the public listener).
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class AdminServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (e.g. port taken)
                raise RuntimeError("the admin server stopped during start-up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
