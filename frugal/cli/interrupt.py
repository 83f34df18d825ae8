"""Run a long coroutine (a benchmark) so Ctrl-C or SIGTERM cancels it cleanly (I/O layer)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine, Iterable
from pathlib import Path
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


async def _finished(work: Coroutine[Any, Any, object]) -> bool:
    await work
    return True


def run_benchmark(
    command: str,
    work: Coroutine[Any, Any, object],
    outputs: Iterable[Path],
    failures: tuple[type[Exception], ...],
) -> int:
    """A benchmark's exit code: 0 (and the files it wrote, one per line), 1 when it failed,
    130 when a signal stopped it."""
    try:
        finished = asyncio.run(until_signal(_finished(work)))
    except failures as failure:
        print(f"{command}: {failure}", file=sys.stderr)
        return 1
    if not finished:
        print(f"{command}: interrupted; everything it started is stopped", file=sys.stderr)
        return INTERRUPTED
    for path in outputs:
        print(path)
    return 0
