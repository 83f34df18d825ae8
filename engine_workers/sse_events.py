"""The Server-Sent Events of a streamed answer, written by the worker itself.

Pure layer. Each chunk is the JSON Envoy's transcoder prints for the typed chunk
messages (preserve_proto_field_names, always_print_primitive_fields, proto field
order, absent optional fields left out), so clients cannot tell the two paths apart;
tests/unit/test_sse_events.py holds them side by side. The constant part of every
event is built once per stream: a token costs one `json.dumps` of its text.
A stream ends with an SSE comment holding the worker's own time, which SSE clients
skip (WHATWG HTML, "event stream interpretation"), then `data: [DONE]` or an error event;
keep-alive comments may precede its first event.
"""

from __future__ import annotations

import json
from typing import Protocol

from engine_workers.engine import TokenUsage
from frugal import wire

DONE_EVENT = b"data: [DONE]\n\n"
# Sent while a stream waits for its first token (engine_workers.first_token_wait): a
# comment, which SSE clients skip, so it is never output (no output check sees it).
KEEPALIVE_COMMENT = b": keep-alive\n\n"
ENGINE_MS_COMMENT = wire.ENGINE_MS_COMMENT.encode()
_CHAT_ROLE = b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
_CHAT_FINAL = b'"choices":[{"index":0,"delta":{},"finish_reason":'
_TEXT_FINAL = b'"choices":[{"index":0,"text":"","finish_reason":'


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _head(request_id: str, kind: str, created: int, model: str) -> bytes:
    """`data: {"id":..,"object":..,"created":..,"model":..,` shared by a stream's events."""
    fields = {"id": request_id, "object": kind, "created": created, "model": model}
    return b"data: " + _json(fields)[:-1] + b","


def _usage(usage: TokenUsage) -> bytes:
    return _json(
        {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }
    )


class ChunkFormat(Protocol):
    """The events of one kind of stream (chat or text completion)."""

    def opening(self) -> bytes: ...

    def text(self, text: str) -> bytes: ...

    def final(self, finish_reason: str) -> bytes: ...

    def usage(self, usage: TokenUsage) -> bytes: ...


class ChatChunks:
    """`chat.completion.chunk` events: a role delta, content deltas, the finish reason."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = _head(request_id, "chat.completion.chunk", created, model)

    def opening(self) -> bytes:
        return self._head + _CHAT_ROLE

    def text(self, text: str) -> bytes:
        return self._head + b'"choices":[{"index":0,"delta":{"content":' + _json(text) + b"}}]}\n\n"

    def final(self, finish_reason: str) -> bytes:
        return self._head + _CHAT_FINAL + _json(finish_reason) + b"}]}\n\n"

    def usage(self, usage: TokenUsage) -> bytes:
        return self._head + b'"choices":[],"usage":' + _usage(usage) + b"}\n\n"


class CompletionChunks:
    """`text_completion` events: text choices, then the finish reason."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self._head = _head(request_id, "text_completion", created, model)

    def opening(self) -> bytes:
        return b""

    def text(self, text: str) -> bytes:
        return self._head + b'"choices":[{"index":0,"text":' + _json(text) + b"}]}\n\n"

    def final(self, finish_reason: str) -> bytes:
        return self._head + _TEXT_FINAL + _json(finish_reason) + b"}]}\n\n"

    def usage(self, usage: TokenUsage) -> bytes:
        return self._head + b'"choices":[],"usage":' + _usage(usage) + b"}\n\n"


def engine_time_comment(engine_ms: float) -> bytes:
    return ENGINE_MS_COMMENT + f"{engine_ms:.3f}".encode() + b"\n\n"
