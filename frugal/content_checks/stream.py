"""Redacting a streamed LLM output chunk by chunk, never emitting a secret in clear.

Pure layer of the shared library. `StreamRedactor.feed` takes chunks as the engine
sends them, at any boundaries, and returns only text that is settled: text
before the earliest position where a match could still start or grow. Each
detector says where that is (`Detector.unsettled_from`): a pattern is settled
before the last character it cannot contain, or more than its longest match
(plus lookahead) back from the end, or, for prefix-anchored secrets, wherever
the tail does not begin like one of their prefixes; a PEM block is pending
from its BEGIN line to its END line. The cut is then moved back to the start
of any match that spans it, so no match is ever split.

That makes the stream's output exactly `redact(text, scan(text, policy))` of
the whole text: matches before the cut are final (no attempt there can read a
character that has not arrived), none crosses it, and a search resumed at the
cut finds what a search over the whole text finds (pattern.py). The held text
is bounded by the largest `max_match_length` plus lookahead plus one match
(`hold_back_bound`); in prose it is usually the last partial word.

output_action "block": the first match is reported in `StreamResult.blocked`
(absolute offsets in the whole output); text before it is emitted, nothing of
it or after it, and the caller ends the stream with an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal.content_checks.match import Match
from frugal.content_checks.policy import (
    ContentPolicy,
    detectors_for,
    find_all,
    redact,
    resolve_overlaps,
)

# Characters of released text kept as context: lookbehinds and word-boundary
# checks read one character before a match.
CONTEXT_CHARS = 8


@dataclass(frozen=True)
class StreamResult:
    """Text that is safe to send now (already redacted), or the match that blocked the stream."""

    text: str
    blocked: Match | None = None
    # What was redacted in `text` (for metrics: categories only, never the values).
    redacted: tuple[Match, ...] = ()


class StreamRedactor:
    """One per streamed response: feed chunks in order, then call `finish`.

    `finish` releases everything held (redacted); feeding after it starts a new
    segment and a later `finish` flushes that one. Once blocked, every call
    returns the blocking match and no text.
    """

    def __init__(self, policy: ContentPolicy) -> None:
        self._detectors = detectors_for(policy)
        self._block = policy.output_action == "block"
        self._context = ""
        self._held = ""
        self._offset = 0  # absolute index of the first held character
        self._blocked: Match | None = None
        self.max_held = 0

    @property
    def hold_back_bound(self) -> int:
        """Most characters `feed` can ever hold (a bound, not a typical value)."""
        longest = max((d.max_match_length or 0 for d in self._detectors), default=0)
        return 2 * longest + 2

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, chunk: str) -> StreamResult:
        if self._blocked is not None:
            return StreamResult("", self._blocked)
        self._held += chunk
        result = self._release(final=False)
        self.max_held = max(self.max_held, len(self._held))
        return result

    def finish(self) -> StreamResult:
        if self._blocked is not None:
            return StreamResult("", self._blocked)
        return self._release(final=True)

    def _release(self, *, final: bool) -> StreamResult:
        text = self._context + self._held
        base = len(self._context)
        cut = len(text) if final else self._unsettled_from(text, base)
        if cut == base:
            return StreamResult("")
        found = find_all(text, self._detectors, base)
        cut = self._before_crossing(cut, found)
        settled = resolve_overlaps(m for m in found if m.end <= cut)
        if self._block and settled:
            first = settled[0]
            self._blocked = first.shifted(self._offset - base)
            self._held = ""
            return StreamResult(text[base : first.start], self._blocked)
        released = redact(text[base:cut], (m.shifted(-base) for m in settled))
        self._context = text[max(0, cut - CONTEXT_CHARS) : cut]
        self._held = text[cut:]
        self._offset += cut - base
        return StreamResult(released, redacted=tuple(settled))

    def _unsettled_from(self, text: str, base: int) -> int:
        """The earliest position any detector still needs more text to decide about."""
        cut = len(text)
        for detector in self._detectors:
            cut = min(cut, max(base, detector.unsettled_from(text, base)))
            if cut == base:
                break
        return cut

    @staticmethod
    def _before_crossing(cut: int, found: list[Match]) -> int:
        """Move the cut back to the start of any match spanning it (they may chain)."""
        moved = True
        while moved:
            moved = False
            for match in found:
                if match.start < cut < match.end:
                    cut, moved = match.start, True
        return cut
