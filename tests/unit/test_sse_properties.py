"""Properties of the worker's Server-Sent Events (engine_workers.answer_events over
engine_workers.sse_events), for any token texts: random Unicode (astral characters,
CR and LF, `data:` and `[DONE]` inside a token, U+2028, NUL), any keep-alive comments
before the first event, and the bytes cut anywhere (inside a UTF-8 sequence too).

The parser is the OpenAI SDK's (what clients run; WHATWG HTML "event stream
interpretation"): it must split the stream back into exactly the JSON chunks written,
one per non-empty token, whose content concatenates to the input, and the last event is
`[DONE]`, or the error event when the output check blocked the answer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from openai._streaming import SSEDecoder

from engine_workers.answer_events import AnswerEvents
from engine_workers.engine import Delta, TokenUsage
from engine_workers.output_guard import OutputGuard
from engine_workers.sse_events import (
    DONE_EVENT,
    KEEPALIVE_COMMENT,
    ChatChunks,
    ChunkFormat,
    CompletionChunks,
    engine_time_comment,
)
from frugal.openai_errors import error_event, output_blocked_message

TRICKY = ["data:", "data: [DONE]", "[DONE]", "\n", "\r\n", "\r", "\n\n", ": x", "\u2028", "\x00"]
# Any Unicode scalar value (no lone surrogates: they cannot be UTF-8), with the tricky
# pieces of the SSE grammar mixed in.
TOKEN = st.one_of(st.text(st.characters(codec="utf-8"), max_size=8),
                  st.sampled_from(TRICKY))  # fmt: skip
FORMATS = st.sampled_from([ChatChunks, CompletionChunks])


def _stream(
    chunks: ChunkFormat, pieces: list[str], guard: OutputGuard | None, keepalives: int
) -> tuple[bytes, AnswerEvents]:
    """The bytes of one stream, put together as the servicer sends them."""
    answer = AnswerEvents(chunks, guard, include_usage=True)

    async def deltas() -> AsyncIterator[Delta]:
        for n, piece in enumerate(pieces, 1):
            usage = TokenUsage(2, len(pieces)) if n == len(pieces) else None
            yield Delta(piece, "stop" if n == len(pieces) else None, usage)

    async def collect() -> list[bytes]:
        return [event async for event in answer.events(deltas())]

    body = KEEPALIVE_COMMENT * keepalives + b"".join(asyncio.run(collect()))
    ending = answer.closing + engine_time_comment(1.5)
    if answer.blocked is None:
        ending += DONE_EVENT
    else:
        kind = ("invalid_request_error", "content_policy_violation")
        ending += error_event(output_blocked_message(answer.blocked), *kind)
    return body + ending, answer


def _parsed(data: bytes, cuts: list[int]) -> list[str]:
    """Each event's data as the SDK's parser reads it, the bytes cut at `cuts`."""
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    return [event.data for event in SSEDecoder().iter_bytes(iter(pieces))]


def _content(chunk: dict[str, Any]) -> str:
    text = ""
    for choice in chunk["choices"]:
        delta = choice.get("delta")
        text += choice.get("text", "") if delta is None else delta.get("content", "")
    return text


@given(FORMATS, st.lists(TOKEN, max_size=12), st.integers(0, 3), st.lists(st.integers(0, 4096)))
def test_a_parser_splits_the_stream_back_into_the_chunks_and_their_text(
    chunk_format: type[ChatChunks | CompletionChunks],
    pieces: list[str],
    keepalives: int,
    cuts: list[int],
) -> None:
    data, _ = _stream(chunk_format("req-1", 7, "m"), pieces, None, keepalives)
    events = _parsed(data, cuts)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    texts = [t for t in pieces if t]
    opening = 1 if chunk_format is ChatChunks else 0  # the role delta
    usage = 1 if pieces else 0  # the engine's count comes with its last token
    # [opening], one chunk per non-empty token, the finish reason, [the usage].
    assert len(chunks) == opening + len(texts) + 1 + usage
    assert [_content(c) for c in chunks[opening : opening + len(texts)]] == texts
    assert "".join(_content(c) for c in chunks) == "".join(pieces)
    assert chunks[opening + len(texts)]["choices"][0]["finish_reason"] == "stop"
    if usage:
        assert chunks[-1]["usage"]["completion_tokens"] == len(pieces)


@given(st.lists(TOKEN, max_size=8), st.sampled_from(["", "jane.doe@example.com"]),
       st.lists(st.integers(0, 4096)))  # fmt: skip
def test_a_checked_stream_ends_in_done_or_the_error_event(
    pieces: list[str], secret: str, cuts: list[int]
) -> None:
    """With a blocking output check: the text written before the match, then the error
    event; never `[DONE]` after a block, never a stream without an ending."""
    guard = OutputGuard.for_checks(["EMAIL"], "block", ())
    assert guard is not None
    data, answer = _stream(ChatChunks("req-2", 7, "m"), [*pieces, secret], guard, 0)
    events = _parsed(data, cuts)
    *chunks, last = events
    parsed = [json.loads(event) for event in chunks]
    text = "".join(_content(c) for c in parsed)
    if answer.blocked is None:
        assert last == "[DONE]"
        assert text == "".join(pieces) + secret
    else:
        assert json.loads(last)["error"]["code"] == "content_policy_violation"
        assert "[DONE]" not in events
        assert "jane.doe@example.com" not in text
        assert ("".join(pieces) + secret).startswith(text)
