"""From an engine's growing token list to OpenAI text deltas (backend layer, pure: no torch).

transformers' continuous batching streams each sequence as its whole token list so far, has
no stop strings and reports no finish reason. `OutputTracker` does what it does not:
- deltas: only the tokens new since the last update are decoded;
- incremental detokenization: a token may end inside a multi-byte character (byte-level BPE
  splits emoji and CJK across tokens), so text is released only once it decodes without a
  trailing U+FFFD, and each token is decoded with context (the offsets scheme of vLLM's and
  TGI's detokenizers: `prefix` marks the first token of the context window, `read` the end
  of what was released);
- stop strings: matched on the text, across deltas; text that may be the start of a stop
  string is held back until it cannot be; on a match the text is trimmed before it and the
  engine must be told to cancel the sequence;
- finish reason: `stop` on an end-of-sequence token or a stop string, `length` at max_tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

REPLACEMENT_CHAR = "\ufffd"

Decode = Callable[[Sequence[int]], str]


class IncrementalDetokenizer:
    """Token ids in, text out, never splitting a character."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, ids: Sequence[int]) -> str:
        self._ids.extend(ids)
        released = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(released) or text.endswith(REPLACEMENT_CHAR):
            return ""  # nothing new, or a character still incomplete
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(released) :]

    def flush(self) -> str:
        """Whatever is held (the sequence ended): an incomplete character decodes as U+FFFD."""
        released = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(released) :]


class StopStringMatcher:
    """Holds back text that might begin a stop string; finds the first stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.matched = False

    def feed(self, text: str) -> str:
        """Text that can go out now; after a match, the text before it (and nothing later)."""
        if self.matched:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        hits = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self.matched = True
            self._held = ""
            return buffer[: min(hits)]
        keep = self._longest_partial_stop(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.matched else held

    def _longest_partial_stop(self, text: str) -> int:
        """The length of the longest suffix of `text` that is a proper prefix of a stop."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


@dataclass(frozen=True, slots=True)
class OutputStep:
    text: str
    finish_reason: str | None = None  # "stop" or "length" once the sequence is over
    cancel: bool = False  # the engine is still generating and must be told to stop


class OutputTracker:
    """One sequence: feed it the engine's cumulative token list after every step."""

    def __init__(
        self, decode: Decode, eos_ids: Collection[int], stops: Sequence[str], max_tokens: int
    ) -> None:
        self._detokenizer = IncrementalDetokenizer(decode)
        self._stops = StopStringMatcher(stops)
        self._eos = frozenset(eos_ids)
        self._max_tokens = max_tokens
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def update(self, tokens: Sequence[int], engine_finished: bool = False) -> OutputStep:
        if self.finish_reason is not None:
            return OutputStep("", self.finish_reason)
        new = list(tokens[self.completion_tokens :])
        self.completion_tokens = len(tokens)
        eos_at = next((i for i, token in enumerate(new) if token in self._eos), None)
        if eos_at is not None:
            new = new[:eos_at]
        text = self._stops.feed(self._detokenizer.push(new))
        if self._stops.matched:
            self.finish_reason = "stop"
            return OutputStep(text, "stop", cancel=not engine_finished)
        if eos_at is not None or engine_finished or len(tokens) >= self._max_tokens:
            self.finish_reason = (
                "length" if eos_at is None and len(tokens) >= self._max_tokens else "stop"
            )
            text += self._stops.feed(self._detokenizer.flush())
            if self._stops.matched:
                self.finish_reason = "stop"
            else:
                text += self._stops.flush()
            return OutputStep(text, self.finish_reason)
        return OutputStep(text)
