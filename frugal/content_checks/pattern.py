"""Detectors made of regular expressions whose candidates are checked in code.

Pure layer of the shared library. Most categories are one or more `PatternSpec`s: a
regex compiled once at import, the alphabet of characters a match can consume,
its longest match, and optionally the literal prefixes every match starts with
and a validator (Luhn, mod-97, `ipaddress`...) that keeps precision high.

Two rules keep streamed and whole-text results identical (see stream.py):
- a candidate that fails validation is skipped one character at a time (the
  next search starts at `candidate.start + 1`), so where the search resumes
  depends only on accepted matches, never on where a chunk happened to end;
- every quantifier is bounded and no sub-pattern (lookarounds included)
  consumes a character outside `alphabet` (where `re` reads more than the alphabet
  names, `_consumable` says so: any script's digit for `\\d`, ASCII look-alikes
  ignoring case), so an attempt at position `s` reads
  at most `max_length + peek` characters and never past a character outside
  the alphabet. `unsettled_from` follows from that: attempts before the last
  such character, or more than `max_length + peek` from the end, are final.

Searching a long text with such a regex tries every position (a leading
lookbehind or character class gives `re` nothing to skip to), so a spec may
name a `Trigger` (shape.py): a byte regex starting with a literal, run over the
text's shape, that matches within `lead` characters of the start of every
match. The regex then runs only from `lead` characters before each trigger
match, and only up to just after the first character outside the alphabet from
the end of it (by the second rule no attempt there reads further), so it finds
exactly what a search over the whole text finds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from frugal.content_checks.match import Match
from frugal.content_checks.shape import ASCII_LOOKALIKES, Trigger, shape_ascii, shape_of

# (text, start, end) of a regex candidate -> the end of the accepted match
# (possibly shorter, never <= start) or None to reject it.
Validator = Callable[[str, int, int], int | None]


class Spec(Protocol):
    """What a `PatternDetector` needs from each of its patterns."""

    @property
    def max_length(self) -> int: ...

    @property
    def trigger(self) -> Trigger | None: ...

    def find(self, category: str, text: str, start: int) -> Iterable[Match]: ...

    def unsettled_from(self, text: str, start: int) -> int: ...


@dataclass(frozen=True)
class PatternSpec:
    """One regex of a detector, with what a stream needs to know about it."""

    regex: re.Pattern[str]
    alphabet: frozenset[str]
    max_length: int
    prefixes: tuple[str, ...] = ()
    ignore_case: bool = False
    peek: int = 2  # characters a lookahead may read past the end of a match
    validate: Validator | None = None
    trigger: Trigger | None = None
    _prefix_regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _outside: re.Pattern[bytes] = field(init=False, repr=False, compare=False)
    _prefix_heads: frozenset[str] = field(init=False, repr=False, compare=False)
    _longest_prefix: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = re.IGNORECASE if self.ignore_case else 0
        prefix_regex = re.compile("|".join(map(re.escape, self.prefixes)), flags)
        folded = tuple(p.lower() for p in self.prefixes) if self.ignore_case else self.prefixes
        heads = frozenset(p[:k] for p in folded for k in range(1, len(p) + 1))
        # Derived once; the dataclass is frozen.
        object.__setattr__(self, "_prefix_regex", prefix_regex)
        object.__setattr__(self, "_prefix_heads", heads)
        object.__setattr__(self, "_longest_prefix", max(map(len, self.prefixes), default=0))
        # A shape byte no attempt reads past: one outside the alphabet (any, if empty).
        shaped = shape_ascii("".join(sorted(self.alphabet)))
        outside = b"[^%s]" % re.escape(shaped) if shaped else b"(?s:.)"
        object.__setattr__(self, "_outside", re.compile(outside))

    @property
    def max_read(self) -> int:
        return self.max_length + self.peek

    def find(self, category: str, text: str, start: int) -> Iterable[Match]:
        if self.trigger is None:
            yield from self._search(category, text, start, len(text))
            return
        text_shape = shape_of(text)
        pos = start  # every start before it is decided
        for low, high in text_shape.spans(self.trigger):
            if high <= pos:
                continue
            # Attempts from before `high` read nothing past the first character
            # outside the alphabet from `high - 1` on: cutting the text after it
            # changes none of them, nor any later one up to it.
            outside = self._outside.search(text_shape.shape, high - 1)
            limit = len(text) if outside is None else outside.end()
            pos = yield from self._search(category, text, max(pos, low - self.trigger.lead), limit)

    def _search(
        self, category: str, text: str, pos: int, limit: int
    ) -> Generator[Match, None, int]:
        """Matches in `text[:limit]` from `pos`; returns where the next search may start."""
        while (candidate := self.regex.search(text, pos, limit)) is not None:
            end: int | None = candidate.end()
            if self.validate is not None:
                end = self.validate(text, candidate.start(), candidate.end())
            if end is None or end <= candidate.start():
                pos = candidate.start() + 1
                continue
            yield Match(category, candidate.start(), end)
            pos = end
        return limit

    def unsettled_from(self, text: str, start: int) -> int:
        n = len(text)
        lowest = max(start, n - self.max_read + 1)
        run_start = n
        while run_start > lowest and self._consumable(text[run_start - 1]):
            run_start -= 1
        if not self.prefixes:
            return run_start
        return self._first_prefix(text, run_start)

    def _consumable(self, char: str) -> bool:
        """A match may consume `char`: it is in the alphabet, or `re` reads it as one of
        the alphabet's characters (`\\d` matches a digit of any script; ignoring case,
        an ASCII look-alike matches its letter). Found by a property test: a card ending
        in an Arabic-Indic digit at a chunk's end was taken as settled there, redacted,
        though the next chunk's digit made the whole text no card."""
        if char in self.alphabet:
            return True
        if char.isdecimal():
            return not self.alphabet.isdisjoint("0123456789")
        letter = ASCII_LOOKALIKES.get(char)
        return letter is not None and not self.alphabet.isdisjoint((letter, letter.upper()))

    def _first_prefix(self, text: str, lowest: int) -> int:
        """The first position >= lowest where a prefix occurs or the text ends in part of one."""
        n = len(text)
        whole = self._prefix_regex.search(text, lowest)
        first = whole.start() if whole is not None else n
        heads = self._prefix_heads  # every non-empty start of a (folded) prefix
        for position in range(max(lowest, n - self._longest_prefix + 1), first):
            head = text[position:].lower() if self.ignore_case else text[position:]
            if head in heads:
                return position
        return first


def charset(*parts: str) -> frozenset[str]:
    """An alphabet from literal characters; "A-Z"-style ranges are expanded."""
    chars: set[str] = set()
    for part in parts:
        i = 0
        while i < len(part):
            if i + 2 < len(part) and part[i + 1] == "-":
                chars.update(chr(c) for c in range(ord(part[i]), ord(part[i + 2]) + 1))
                i += 3
            else:
                chars.add(part[i])
                i += 1
    return frozenset(chars)


class PatternDetector:
    """A detector for one category built from one or more `PatternSpec`s."""

    def __init__(self, name: str, specs: Iterable[Spec]) -> None:
        self.name = name
        self.specs = tuple(specs)
        self.max_match_length: int | None = max(spec.max_length for spec in self.specs)
        found = (spec.trigger for spec in self.specs if spec.trigger is not None)
        self.triggers = tuple(dict.fromkeys(found))

    def find(self, text: str, start: int = 0) -> list[Match]:
        found = [m for spec in self.specs for m in spec.find(self.name, text, start)]
        return sorted(found, key=lambda m: (m.start, -m.end))

    def unsettled_from(self, text: str, start: int = 0) -> int:
        return min(spec.unsettled_from(text, start) for spec in self.specs)
