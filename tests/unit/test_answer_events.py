"""A streamed answer as the worker writes it: the chunk events (the JSON the transcoder
printed for the typed chunks), the opening that waits for the first text,
and the output checks run token by token (OutputGuard over the checks' StreamRedactor):
whatever the token boundaries, the text that goes out is the whole text redacted."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_workers.answer_events import AnswerEvents
from engine_workers.engine import Delta, TokenUsage
from engine_workers.output_guard import OutputGuard
from engine_workers.sse_events import (
    ChatChunks,
    ChunkFormat,
    CompletionChunks,
    engine_time_comment,
)
from frugal import wire
from frugal.content_checks import DEFAULT_POLICY, redact, scan
from frugal.v1 import inference_pb2 as pb

EMAIL = "jane.doe@example.com"
PIECES = ("Grüße ", "aus ", "Köln 🚀, ", "mail ", "jane.d", "oe@exa", "mple.com", " bitte.")
WHOLE = "".join(PIECES)
REDACTED = "Grüße aus Köln 🚀, mail [REDACTED:EMAIL] bitte."
DETECTORS = DEFAULT_POLICY.detectors
USAGE = TokenUsage(prompt_tokens=3, completion_tokens=len(PIECES))


def transcoded(message: Any) -> dict[str, Any]:
    """The JSON Envoy's transcoder printed for a typed chunk (the listener's print_options)."""
    fields: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return fields


def event(data: bytes) -> dict[str, Any]:
    """The one event in `data`, which must be framed as SSE."""
    assert data.startswith(b"data: {") and data.endswith(b"}\n\n"), data
    assert b"\n" not in data[:-2], data
    fields: dict[str, Any] = json.loads(data.removeprefix(b"data: "))
    return fields


def chat_chunk(**fields: Any) -> Any:
    return pb.ChatCompletionChunk(id="chatcmpl-1", object="chat.completion.chunk",
                                  created=1700000000, model="m\"ü", **fields)  # fmt: skip


def text_chunk(**fields: Any) -> Any:
    return pb.Completion(id="cmpl-1", object="text_completion", created=1700000000,
                         model="m", **fields)  # fmt: skip


def test_chat_events_are_what_the_transcoder_printed() -> None:
    chunks = ChatChunks("chatcmpl-1", 1700000000, 'm"ü')
    usage = pb.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    role = pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(role="assistant", content=""))
    text = pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(content='say "hi" 🚀\n'))
    final = pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(), finish_reason="length")
    assert event(chunks.opening()) == transcoded(chat_chunk(choices=[role]))
    assert event(chunks.text('say "hi" 🚀\n')) == transcoded(chat_chunk(choices=[text]))
    assert event(chunks.final("length")) == transcoded(chat_chunk(choices=[final]))
    assert event(chunks.usage(TokenUsage(3, 2))) == transcoded(chat_chunk(choices=[], usage=usage))


def test_completion_events_are_what_the_transcoder_printed() -> None:
    chunks = CompletionChunks("cmpl-1", 1700000000, "m")
    usage = pb.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    text = pb.CompletionChoice(index=0, text="ok")
    final = pb.CompletionChoice(index=0, text="", finish_reason="stop")
    assert chunks.opening() == b""
    assert event(chunks.text("ok")) == transcoded(text_chunk(choices=[text]))
    assert event(chunks.final("stop")) == transcoded(text_chunk(choices=[final]))
    assert event(chunks.usage(TokenUsage(3, 2))) == transcoded(text_chunk(choices=[], usage=usage))


def test_the_engine_time_comment_is_an_sse_comment() -> None:
    assert engine_time_comment(12.3456) == f"{wire.ENGINE_MS_COMMENT}12.346\n\n".encode()


async def _deltas(pieces: Iterable[str], finish: str = "stop") -> AsyncIterator[Delta]:
    for piece in pieces:
        yield Delta(piece)
    yield Delta("", finish_reason=finish, usage=USAGE)


def answer(
    pieces: Iterable[str],
    guard: OutputGuard | None = None,
    chunks: ChunkFormat | None = None,
    *,
    include_usage: bool = False,
) -> tuple[list[bytes], AnswerEvents]:
    events = AnswerEvents(chunks or ChatChunks("c", 1, "m"), guard, include_usage=include_usage)

    async def collect() -> list[bytes]:
        return [data async for data in events.events(_deltas(pieces))]

    return asyncio.run(collect()), events


def parsed(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n\n"), data
    return [json.loads(e.removeprefix(b"data: ")) for e in data[:-2].split(b"\n\n")]


def text_of(sent: list[bytes], closing: bytes) -> str:
    pieces = []
    for event in parsed(b"".join(sent) + closing):
        for choice in event["choices"]:
            delta = choice.get("delta")
            pieces.append(choice["text"] if delta is None else delta.get("content") or "")
    return "".join(pieces)


def guard(action: str = "redact") -> OutputGuard:
    built = OutputGuard.for_checks(DETECTORS, action, ())
    assert built is not None
    return built


def test_without_checks_every_token_is_one_message_and_the_role_waits_for_the_first() -> None:
    sent, events = answer(PIECES, include_usage=True)
    assert len(sent) == len(PIECES)
    first = parsed(sent[0])
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first[1]["choices"][0]["delta"] == {"content": PIECES[0]}
    closing = parsed(events.closing)
    assert closing[0]["choices"][0]["finish_reason"] == "stop"
    assert closing[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert text_of(sent, events.closing) == WHOLE
    assert events.sent_any and events.blocked is None


def test_an_answer_without_text_still_opens_and_finishes() -> None:
    sent, events = answer([])
    assert sent == [] and not events.sent_any
    kinds = [e["choices"][0]["delta"] for e in parsed(events.closing)]
    assert kinds == [{"role": "assistant", "content": ""}, {}]


def test_a_redacted_answer_holds_back_only_what_could_still_match() -> None:
    sent, events = answer(PIECES, guard())
    assert text_of(sent, events.closing) == REDACTED
    assert EMAIL not in b"".join(sent).decode() + events.closing.decode()
    assert parsed(events.closing)[-1]["choices"][0]["finish_reason"] == "stop"
    assert events.blocked is None


def test_completion_answers_are_redacted_too() -> None:
    sent, events = answer(PIECES, guard(), CompletionChunks("c", 1, "m"))
    assert text_of(sent, events.closing) == REDACTED
    assert parsed(events.closing)[-1]["choices"][0] == {
        "index": 0,
        "text": "",
        "finish_reason": "stop",
    }


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(WHOLE)), max_size=12))
def test_arbitrary_token_boundaries_give_the_whole_text_redacted(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(WHOLE)]
    pieces = [WHOLE[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    sent, events = answer(pieces, guard())
    assert text_of(sent, events.closing) == redact(WHOLE, scan(WHOLE, DEFAULT_POLICY))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abc xyz,.", min_size=1, max_size=6), max_size=10))
def test_clean_text_goes_out_unchanged(pieces: list[str]) -> None:
    sent, events = answer(pieces, guard())
    assert text_of(sent, events.closing) == "".join(pieces)


def test_block_stops_at_the_first_match_and_keeps_the_text_before_it() -> None:
    sent, events = answer([*PIECES, "never sent"], guard("block"))
    assert events.blocked == "EMAIL"
    text = text_of(sent, events.closing)
    assert WHOLE.startswith(text) and "jane" not in text and "never" not in text
    assert all("finish_reason" not in e["choices"][0]
               for e in parsed(b"".join(sent) + events.closing))  # fmt: skip


def test_block_found_when_the_answer_ends_is_reported() -> None:
    sent, events = answer(["mail ", EMAIL], guard("block"))
    assert events.blocked == "EMAIL"
    assert "jane" not in text_of(sent, events.closing)


def test_the_guard_names_what_it_redacted() -> None:
    checks = guard()
    answer(["a@b.co and ", EMAIL, " again"], checks)
    assert checks.redacted == ["EMAIL", "EMAIL"]


def test_no_detectors_means_no_guard_and_unknown_ones_are_refused() -> None:
    assert OutputGuard.for_checks((), "redact", ()) is None
    with pytest.raises(ValueError):
        OutputGuard.for_checks(("NOT_A_DETECTOR",), "redact", ())
    with pytest.raises(ValueError):
        OutputGuard.for_checks(("EMAIL",), "shout", ())
