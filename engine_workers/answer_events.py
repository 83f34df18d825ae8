"""A streamed answer as Server-Sent Events: deltas in, event bytes out.

Pure layer (no gRPC): the servicer wraps what this yields in google.api.HttpBody.
The opening event (a chat stream's role delta) waits for the first released text, so
the first bytes, and with them the response headers, leave at the first token: the
gateway reads its time to first token off the headers. The closing events (finish
reason, usage) are left in `closing` for the servicer, which sends them with the end
of the stream in one message. With an OutputGuard, text goes out only as the guard
releases it; when the guard blocks, the events stop after the text released before
the match and `blocked` names its category.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from engine_workers.engine import Delta
from engine_workers.output_guard import OutputGuard
from engine_workers.sse_events import ChunkFormat


class AnswerEvents:
    def __init__(
        self, chunks: ChunkFormat, guard: OutputGuard | None, *, include_usage: bool
    ) -> None:
        self._chunks = chunks
        self._guard = guard
        self._include_usage = include_usage
        self._pending = chunks.opening()
        self.sent_any = False
        self.closing = b""

    @property
    def blocked(self) -> str | None:
        """The category that stopped the answer, if the output checks stopped it."""
        return None if self._guard is None else self._guard.blocked

    async def events(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[bytes]:
        last = Delta("")
        async for delta in deltas:
            last = delta
            if not delta.text:
                continue
            released = delta.text if self._guard is None else self._guard.feed(delta.text)
            if released:
                yield self._send(self._chunks.text(released))
            if self.blocked is not None:
                self.closing = self._take_pending()
                return
        if self._guard is not None:
            tail = self._guard.finish()
            if tail:
                self._pending += self._chunks.text(tail)
        closing = self._take_pending()
        if self.blocked is None:
            closing += self._chunks.final(last.finish_reason or "stop")
            if self._include_usage and last.usage is not None:
                closing += self._chunks.usage(last.usage)
        self.closing = closing

    def _send(self, event: bytes) -> bytes:
        out = self._take_pending() + event
        self.sent_any = True
        return out

    def _take_pending(self) -> bytes:
        pending, self._pending = self._pending, b""
        return pending
