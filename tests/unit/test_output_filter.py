"""SseOutputFilter and check_whole_body: generated text checked on its way out.

SSE streams are cut at arbitrary byte boundaries (mid-event, mid-UTF-8 character);
the text that comes out must be the whole text redacted, whatever the cuts.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from safety_filter.checks import DEFAULT_POLICY, StreamRedactor, redact, scan
from safety_filter.extproc.output_filter import SseOutputFilter, check_whole_body, usage_of

EMAIL = "jane.doe@example.com"
BLOCKING = DEFAULT_POLICY.model_copy(update={"output_action": "block"})
PIECES = ("Grüße ", "aus ", "Köln 🚀, ", "mail ", "jane.d", "oe@exa", "mple.com", " bitte.")
WHOLE = "".join(PIECES)
REDACTED = "Grüße aus Köln 🚀, mail [REDACTED:EMAIL] bitte."


def chat_event(text: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    event = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "sim-echo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


def completion_event(text: str, finish: str | None = None) -> bytes:
    event = {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "sim-echo",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"


CHAT_STREAM = b"".join(chat_event(p) for p in PIECES) + chat_event(finish="stop")


def run(raw_chunks: Iterable[bytes], output: SseOutputFilter) -> bytes:
    out = b"".join(output.feed(chunk).body for chunk in raw_chunks)
    return out + output.finish().body


def events(stream: bytes) -> list[dict[str, Any]]:
    if not stream:
        return []
    assert stream.endswith(b"\n\n"), stream
    parsed = []
    for event in stream[:-2].split(b"\n\n"):
        assert event.startswith(b"data: "), event
        parsed.append(json.loads(event[len(b"data: ") :]))
    return parsed


def text_of(stream: bytes) -> str:
    pieces = []
    for event in events(stream):
        choice = event["choices"][0]
        pieces.append(
            (choice["delta"].get("content") or "") if "delta" in choice else choice["text"]
        )
    return "".join(pieces)


def cut(raw: bytes, positions: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(positions)), len(raw)]
    return [raw[a:b] for a, b in itertools.pairwise(bounds)]


def redactor_filter() -> SseOutputFilter:
    return SseOutputFilter(StreamRedactor(DEFAULT_POLICY))


def test_a_whole_stream_is_redacted_and_keeps_its_finish_event() -> None:
    out = run([CHAT_STREAM], redactor_filter())
    assert EMAIL.encode() not in out
    assert text_of(out) == REDACTED == redact(WHOLE, scan(WHOLE, DEFAULT_POLICY))
    parsed = events(out)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(e["id"] == "chatcmpl-1" and e["model"] == "sim-echo" for e in parsed)


def test_every_single_byte_cut_gives_the_same_text() -> None:
    for position in range(1, len(CHAT_STREAM)):
        out = run(cut(CHAT_STREAM, [position]), redactor_filter())
        assert text_of(out) == REDACTED, position
        assert b"jane" not in out


def test_byte_by_byte_feeding_splits_multi_byte_characters() -> None:
    rocket = "🚀".encode()
    assert len(rocket) == 4 and len("ü".encode()) == 2
    inside = CHAT_STREAM.index(rocket) + 2  # between the 2nd and 3rd byte of the rocket
    output = redactor_filter()
    first = output.feed(CHAT_STREAM[:inside]).body
    assert "🚀" not in first.decode()  # its event is not complete yet
    rest = b"".join(
        output.feed(CHAT_STREAM[i : i + 1]).body for i in range(inside, len(CHAT_STREAM))
    )
    out = first + rest + output.finish().body
    assert text_of(out) == REDACTED
    assert "Grüße" in out.decode() and "🚀" in out.decode()


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.integers(min_value=1, max_value=len(CHAT_STREAM) - 1), max_size=12))
def test_arbitrary_cuts_give_the_whole_text_redacted(positions: list[int]) -> None:
    out = run(cut(CHAT_STREAM, positions), redactor_filter())
    assert text_of(out) == REDACTED
    assert b"jane" not in out and b"example" not in out


@settings(max_examples=150, deadline=None, database=None)
@given(
    st.lists(st.text(st.sampled_from('aü🚀 .,\n"\\x'), max_size=8), min_size=1, max_size=6),
    st.data(),
)
def test_clean_text_round_trips_at_arbitrary_cuts(pieces: list[str], data: st.DataObject) -> None:
    raw = b"".join(chat_event(p) for p in pieces) + chat_event(finish="length")
    positions = data.draw(st.lists(st.integers(min_value=1, max_value=len(raw) - 1), max_size=10))
    out = run(cut(raw, positions), redactor_filter())
    assert text_of(out) == "".join(pieces)
    assert events(out)[-1]["choices"][0]["finish_reason"] == "length"


def test_held_text_is_released_by_finish_when_no_finish_event_came() -> None:
    output = redactor_filter()
    first = output.feed(chat_event("Contact ") + chat_event(EMAIL))
    assert EMAIL.encode() not in first.body
    tail = output.finish()
    assert tail.blocked is None
    assert text_of(first.body + tail.body) == "Contact [REDACTED:EMAIL]"
    released = events(tail.body)[-1]
    assert released["id"] == "chatcmpl-1"
    assert released["object"] == "chat.completion.chunk"
    assert released["choices"] == [{"index": 0, "delta": {"content": "[REDACTED:EMAIL]"}}]
    assert output.finish().body == b""  # once


def test_a_partial_trailing_event_is_dropped_by_finish() -> None:
    output = redactor_filter()
    partial = b'data: {"choices":[{"index":0,"delta":{"content":"' + EMAIL.encode()
    body = output.feed(chat_event("Hi.") + partial).body
    body += output.finish().body
    assert EMAIL.encode() not in body and b"jane" not in body
    assert text_of(body) == "Hi."


def test_text_events_counts_events_with_text() -> None:
    output = redactor_filter()
    raw = (
        chat_event()  # a role-only delta
        + chat_event("")
        + chat_event("one ")
        + chat_event("two")
        + b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
        + chat_event(finish="stop")
    )
    for chunk in cut(raw, range(5, len(raw), 9)):
        output.feed(chunk)
    assert output.text_events == 2


def test_events_without_text_pass_through_unchanged() -> None:
    raw = (
        b": keep-alive\n\n"
        + b'data: {"id":"1"}\n\n'
        + b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
        + b"data: {not json}\n\n"
        + b"data: [DONE]\n\n"
    )
    output = redactor_filter()
    assert output.feed(raw).body == raw
    assert output.text_events == 0
    assert output.finish().body == b""


def test_completion_events_are_redacted() -> None:
    raw = (
        completion_event("Write to jane.")
        + completion_event("doe@example.com")
        + completion_event(" now", "stop")
    )
    out = run(cut(raw, [17, 100, 101]), redactor_filter())
    assert b"jane" not in out
    assert all(e["object"] == "text_completion" for e in events(out))
    assert text_of(out) == "Write to [REDACTED:EMAIL] now"


def test_completion_text_held_at_the_end_is_released_as_a_completion_event() -> None:
    out = run([completion_event("Write to "), completion_event(EMAIL)], redactor_filter())
    last = events(out)[-1]
    assert last["object"] == "text_completion"
    assert last["choices"] == [{"index": 0, "text": "[REDACTED:EMAIL]"}]


def test_block_stops_at_the_first_match() -> None:
    output = SseOutputFilter(StreamRedactor(BLOCKING))
    result = output.feed(chat_event("Hello. ") + chat_event(EMAIL) + chat_event(" more"))
    assert result.blocked is not None and result.blocked.category == "EMAIL"
    assert b"jane" not in result.body
    assert output.feed(chat_event("after")).body == b""
    assert output.feed(b"").blocked == result.blocked
    assert output.finish() == type(result)(b"", result.blocked)


def test_block_keeps_the_text_before_the_match() -> None:
    output = SseOutputFilter(StreamRedactor(BLOCKING))
    result = output.feed(chat_event("Hello. ") + chat_event(f"Write to {EMAIL} now"))
    assert result.blocked is not None
    assert text_of(result.body) == "Hello. Write to "


def test_block_found_at_the_end_is_reported_by_finish() -> None:
    output = SseOutputFilter(StreamRedactor(BLOCKING))
    assert output.feed(chat_event("mail " + EMAIL)).blocked is None
    tail = output.finish()
    assert tail.blocked is not None and tail.blocked.category == "EMAIL"
    assert tail.body == b""


# --- whole bodies -----------------------------------------------------------------------------


def chat_completion(content: Any, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        **extra,
    }
    return json.dumps(body).encode()


USAGE = {"usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}


def test_a_unary_chat_answer_is_redacted_and_reports_its_usage() -> None:
    body, usage, _ = check_whole_body(chat_completion(f"Grüße, {EMAIL}!", **USAGE), DEFAULT_POLICY)
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == "Grüße, [REDACTED:EMAIL]!"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert usage == (4, 6)
    assert "Grüße".encode() in body  # not \u-escaped


def test_a_unary_completion_answer_is_redacted() -> None:
    raw = json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": EMAIL}]})
    body, usage, _ = check_whole_body(raw.encode(), DEFAULT_POLICY)
    assert json.loads(body)["choices"][0]["text"] == "[REDACTED:EMAIL]"
    assert usage is None


def test_a_unary_answer_under_block_is_withheld() -> None:
    body, usage, _ = check_whole_body(chat_completion(f"mail {EMAIL}", **USAGE), BLOCKING)
    choice = json.loads(body)["choices"][0]
    assert choice["message"]["content"] == ""
    assert choice["finish_reason"] == "content_filter"
    assert usage == (4, 6)


def test_clean_or_textless_bodies_are_returned_as_they_came() -> None:
    for raw in (
        chat_completion("nothing to see", **USAGE),
        chat_completion(None, **USAGE),
        chat_completion(""),
        b'{"id":"c1","object":"chat.completion"}',
        b'{"choices":[]}',
        b"[1, 2]",
        b"not json " + EMAIL.encode(),
        b"",
    ):
        body, _, _ = check_whole_body(raw, DEFAULT_POLICY)
        assert body == raw
    assert check_whole_body(chat_completion(None, **USAGE), DEFAULT_POLICY)[1] == (4, 6)


def test_usage_of() -> None:
    assert usage_of(USAGE) == (4, 6)
    assert usage_of({}) is None
    assert usage_of({"usage": None}) is None
    assert usage_of({"usage": {"prompt_tokens": 4}}) is None
    assert usage_of({"usage": {"prompt_tokens": "4", "completion_tokens": 6}}) is None
    assert usage_of({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}) == (0, 0)
