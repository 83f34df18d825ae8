"""BLOCKLIST: configured terms, matched case-insensitively as whole words.

Pure layer of the shared library (one detector). All terms go into one Aho-Corasick
automaton (pyahocorasick), built once per term list, so scanning costs the same
for ten terms or ten thousand. A hit counts only when the characters on both
sides are not word characters: "classified" does not match inside
"declassified". Overlapping hits ("acme", "acme rocket") are all reported; the
policy's overlap rule keeps the longest.
"""

from __future__ import annotations

from collections.abc import Iterable

import ahocorasick  # type: ignore[import-not-found]

from frugal.content_checks.match import Detector, Match
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "BLOCKLIST"


def fold_case(text: str) -> str:
    """Lower-case `text` without moving any offsets (a few characters grow when lowered)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(low if len(low := ch.lower()) == 1 else ch for ch in text)


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


class BlocklistDetector:
    """Whole-word, case-insensitive matches of a fixed list of terms."""

    name = CATEGORY
    triggers: tuple[Trigger, ...] = ()  # the automaton scans the text itself

    def __init__(self, terms: Iterable[str]) -> None:
        folded = sorted({fold_case(term.strip()) for term in terms if term.strip()})
        self.terms: tuple[str, ...] = tuple(folded)
        self._longest = max((len(term) for term in folded), default=0)
        self.max_match_length: int | None = self._longest
        self._automaton = ahocorasick.Automaton()
        for term in folded:
            self._automaton.add_word(term, len(term))
        self._automaton.make_automaton()

    def _bounded(self, text: str, start: int, end: int) -> bool:
        before = start == 0 or not _is_word(text[start - 1])
        return before and (end == len(text) or not _is_word(text[end]))

    def find(self, text: str, start: int = 0) -> list[Match]:
        if not self.terms:
            return []
        found: list[Match] = []
        for last, length in self._automaton.iter(fold_case(text), start):
            first, end = last - length + 1, last + 1
            if self._bounded(text, first, end):
                found.append(Match(CATEGORY, first, end))
        return sorted(found, key=lambda m: (m.start, -m.end))

    def unsettled_from(self, text: str, start: int = 0) -> int:
        if not self.terms:
            return len(text)
        folded = fold_case(text)
        n = len(text)
        for position in range(max(start, n - self._longest), n):
            if position > 0 and _is_word(text[position - 1]):
                continue
            if self._automaton.match(folded[position:]):
                return position
        return n


def build(options: DetectorOptions) -> Detector:
    return BlocklistDetector(options.blocklist)
