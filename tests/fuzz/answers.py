"""What every answer of the public API must look like (test support, pure): an error is
OpenAI-shaped with a message that says something, a stream ends with `data: [DONE]` or an
error event."""

from __future__ import annotations

import json
from typing import Any, Protocol


class Answer(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...


def openai_error(answer: Answer) -> dict[str, Any]:
    """The `error` object of an error answer; fails when it is not OpenAI's shape."""
    assert answer.status_code >= 400, answer.text
    error = json.loads(answer.text)["error"]
    assert isinstance(error["message"], str) and error["message"].strip(), answer.text
    assert isinstance(error["type"], str) and error["type"], answer.text
    assert "code" in error, answer.text
    return dict(error)


def data_events(text: str) -> list[str]:
    """The `data:` payloads of a Server-Sent Events body (comments skipped)."""
    events = [event for event in text.split("\n\n") if event.strip()]
    payloads = []
    for event in events:
        lines = [line for line in event.split("\n") if not line.startswith(":")]
        if lines:
            assert all(line.startswith("data: ") for line in lines), event
            payloads.append("\n".join(line.removeprefix("data: ") for line in lines))
    return payloads


def assert_stream_finished(text: str, context: str = "") -> None:
    """A stream ends with `[DONE]` after chunks, or with an error event, nothing after it
    (`context` says what was sent, for the failure's message)."""
    payloads = data_events(text)
    assert payloads, f"{text!r} ({context})"
    last = payloads[-1]
    if last != "[DONE]":
        error = json.loads(last).get("error")
        assert isinstance(error, dict), f"no [DONE] nor error event: {text[-600:]!r} ({context})"
        assert set(error) >= {"message", "type", "code"}, text
    for payload in payloads[:-1]:
        assert "error" not in json.loads(payload), text
