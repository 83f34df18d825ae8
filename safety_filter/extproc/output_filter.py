"""Checking generated text on its way out: SSE streams event by event, whole bodies at once.

Pure layer. A stream arrives as `data: {...}\n\n` events cut at arbitrary byte
boundaries; `SseOutputFilter` reassembles events, runs each event's text through
a StreamRedactor (which holds back text that could still be the start of a
sensitive string), writes the safe part back into the event, and flushes what
is held (redacted) into the event that carries the finish reason. With the
`block` action the stream stops at the first match and the caller ends it with
an error event. It also counts the text events it saw, so usage can be settled
when an engine never reports it (client gone, engine failed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from safety_filter.checks import ContentPolicy, Match, redact, scan


class StreamCheck(Protocol):
    """What the output filter needs of safety_filter.checks' StreamRedactor."""

    def feed(self, chunk: str) -> Any: ...

    def finish(self) -> Any: ...


@dataclass(frozen=True)
class FilteredOutput:
    body: bytes
    blocked: Match | None = None


def _encode(event: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def _text_slot(event: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The dict and key that hold this event's generated text (chat delta or completion)."""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta, "content"
    if "text" in choice:
        return choice, "text"
    message = choice.get("message")
    if isinstance(message, dict):
        return message, "content"
    return None


class SseOutputFilter:
    """One per streamed response."""

    def __init__(self, check: StreamCheck) -> None:
        self._check = check
        self._pending = b""
        self._flushed = False
        self._last_event: dict[str, Any] = {}
        self.blocked: Match | None = None
        self.redacted: list[Match] = []
        self.text_events = 0

    def feed(self, raw: bytes) -> FilteredOutput:
        if self.blocked is not None:
            return FilteredOutput(b"", self.blocked)
        self._pending += raw
        out = bytearray()
        while (end := self._pending.find(b"\n\n")) >= 0:
            event, self._pending = self._pending[: end + 2], self._pending[end + 2 :]
            out += self._filter_event(event)
            if self.blocked is not None:
                self._pending = b""
                break
        return FilteredOutput(bytes(out), self.blocked)

    def finish(self) -> FilteredOutput:
        """End of stream: release what is still held (redacted) when no finish event came.

        An incomplete trailing event is dropped, never passed on unchecked.
        """
        self._pending = b""
        if self.blocked is not None or self._flushed:
            return FilteredOutput(b"", self.blocked)
        self._flushed = True
        result = self._check.finish()
        self.redacted += result.redacted
        self.blocked = result.blocked
        if self.blocked is not None or not result.text or not self._last_event:
            return FilteredOutput(b"", self.blocked)
        event = {**self._last_event, "choices": [{"index": 0, "delta": {"content": result.text}}]}
        if self._last_event.get("object") == "text_completion":
            event["choices"] = [{"index": 0, "text": result.text}]
        return FilteredOutput(_encode(event))

    def _filter_event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: {"):
            return event
        try:
            data = json.loads(event[6:])
        except ValueError:
            return event
        slot = _text_slot(data)
        if slot is None:
            return event
        self._last_event = {k: v for k, v in data.items() if k not in ("choices", "usage")}
        holder, key = slot
        text = holder.get(key) or ""
        safe = ""
        if text:
            self.text_events += 1
            result = self._check.feed(text)
            self.redacted += result.redacted
            safe, self.blocked = result.text, result.blocked
        if self.blocked is None and data["choices"][0].get("finish_reason") is not None:
            self._flushed = True
            flushed = self._check.finish()
            self.redacted += flushed.redacted
            safe, self.blocked = safe + flushed.text, flushed.blocked
        if self.blocked is not None:
            # The text before the match was safe to release; the match and what follows are not.
            if not safe:
                return b""
            holder[key] = safe
            data["choices"][0]["finish_reason"] = None
            return _encode(data)
        if safe == text:
            return event
        holder[key] = safe
        return _encode(data)


def usage_of(body: dict[str, Any]) -> tuple[int, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


class WholeBody(NamedTuple):
    body: bytes  # to send
    usage: tuple[int, int] | None  # (prompt, completion) tokens, if the body reports them
    matches: list[Match]  # what was found in its text


def check_whole_body(raw: bytes, policy: ContentPolicy) -> WholeBody:
    """A unary answer, checked as a whole.

    `redact` rewrites the text; `block` withholds it and sets finish_reason to
    "content_filter", as OpenAI does when its own filters stop an answer (the
    status line is already out, so this cannot become an error response).
    """
    try:
        data = json.loads(raw)
    except ValueError:
        return WholeBody(raw, None, [])
    if not isinstance(data, dict):
        return WholeBody(raw, None, [])
    usage = usage_of(data)
    slot = _text_slot(data)
    text = slot[0].get(slot[1]) if slot is not None else None
    if slot is None or not isinstance(text, str) or not text:
        return WholeBody(raw, usage, [])
    holder, key = slot
    matches = scan(text, policy)
    if not matches:
        return WholeBody(raw, usage, [])
    if policy.output_action == "block":
        holder[key] = ""
        data["choices"][0]["finish_reason"] = "content_filter"
    else:
        holder[key] = redact(text, matches)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return WholeBody(body, usage, matches)
