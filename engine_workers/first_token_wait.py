"""What a stream does while it waits for its first event: headers, then keep-alive comments.

Core layer (asyncio, no gRPC). `WaitPlan` is pure: the moments, counted from the start of
the answer, at which a stream that has no event yet sends its response headers (so Envoy
sees a live replica and never abandons it for its per-try timeout), then an SSE comment
every interval (so no proxy on the way cuts the silent stream as idle). `until_first_event`
runs one answer's events and, until the first of them, yields what the plan says is due as
it falls due; from the first event on it passes the events straight through, with no task
or timer per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


class Due(enum.Enum):
    """Something a waiting stream must send now."""

    HEADERS = "headers"
    KEEPALIVE = "keepalive"


@dataclass(frozen=True)
class WaitPlan:
    headers_after_s: float
    keepalive_interval_s: float

    def actions(self) -> Iterator[tuple[float, Due]]:
        """(seconds after the start, what is due), in time order, without end. Headers come
        first unless a comment is due sooner (the comment's message carries them)."""
        if self.headers_after_s < self.keepalive_interval_s:
            yield self.headers_after_s, Due.HEADERS
        beat = 1
        while True:
            yield beat * self.keepalive_interval_s, Due.KEEPALIVE
            beat += 1


async def until_first_event(
    events: AsyncIterator[T], plan: WaitPlan
) -> AsyncGenerator[T | Due, None]:
    """`events`, preceded by the plan's actions that fall due before the first of them.

    The first event is awaited in a task of its own, so that waiting for it can time out
    without cancelling it; a caller that leaves (the client went away) cancels that task,
    which closes the answer and with it the engine's sequence.
    """
    iterator = aiter(events)
    first: asyncio.Future[T] = asyncio.ensure_future(anext(iterator))
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for at, due in plan.actions():
            done, _ = await asyncio.wait({first}, timeout=max(0.0, start + at - loop.time()))
            if done:
                break
            yield due
    finally:
        if not first.done():
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
    try:
        event = first.result()
    except StopAsyncIteration:
        return
    yield event
    async for event in iterator:
        yield event
