"""Run a long coroutine (a benchmark) so Ctrl-C or SIGTERM cancels it cleanly (I/O layer)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
INTERRUPTED = 130


async def until_signal(work: Coroutine[Any, Any, T]) -> T | None:
    """The coroutine's result, or None when a signal cancelled it (its cleanup has run:
    every stack it started is stopped)."""
    task = asyncio.create_task(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
