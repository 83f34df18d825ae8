"""The shape of a text: what pattern triggers scan instead of the text itself.

Pure layer of the shared library. Python's `re` skips quickly only to a literal
character, and most detector patterns start with a lookbehind or a character
class, so searching a 200 KB prompt with one of them tries every position
(milliseconds per pattern). A shape is the text as bytes, one per character,
where every decimal digit (any script: what `\\d` matches) is `0`, so that "four
digits" is the literal `0000`. Other ASCII characters stay as they are; other
non-ASCII characters become `?`, except the four that `re` matches to an ASCII
letter when ignoring case (the long s U+017F is `s`, the Kelvin sign `k`...).

A `Trigger` (pattern.py) is a literal and then a byte regex over the shape, or
over its folded (lower-case) form. `TextShape.search` runs the triggers of all
a policy's detectors once per text, one pass per leading byte (`re` costs about
a cycle a byte to skip to it; `bytes.find` skips to a rare one far faster);
`shape_of` keeps the shape of the last text it was asked about, so that every
detector of one scan shares it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

_DIGITS = bytes.maketrans(b"0123456789", b"0" * 10)
# Every non-ASCII character `re` matches, ignoring case, to an ASCII letter
# (the tests check this against every code point).
ASCII_LOOKALIKES: dict[str, str] = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
_NON_ASCII_DIGIT = re.compile(r"[^\x00-\x7f\D]")
_UNKNOWN = ord("?")


@dataclass(frozen=True)
class Trigger:
    """A literal, then a regex, over a text's shape: where a pattern could match.

    Every match of the pattern it guards starts at most `lead` characters before
    a place where `literal` followed by `then` matches the shape (its folded,
    lower-case form when `folded`).
    """

    literal: bytes
    then: bytes = b""
    lead: int = 0
    folded: bool = False
    regex: re.Pattern[bytes] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.literal:
            raise ValueError("a trigger starts with a literal")
        then = b"(?:%s)" % self.then if self.then else b""
        object.__setattr__(self, "regex", re.compile(re.escape(self.literal) + then))
        # Triggers key the spans of every scan: hash the fields once, not at each lookup.
        object.__setattr__(self, "_hash", hash((self.literal, self.then, self.lead, self.folded)))

    def __hash__(self) -> int:
        return self._hash


def shape_ascii(chars: str) -> bytes:
    """ASCII characters as a shape writes them."""
    return chars.encode("ascii").translate(_DIGITS)


class TextShape:
    """One text's shape, and the spans where each trigger searched for matches it."""

    def __init__(self, text: str) -> None:
        self.shape = _shape(text)
        self._folded: bytes | None = None
        self._spans: dict[Trigger, list[tuple[int, int]]] = {}

    @property
    def folded(self) -> bytes:
        if self._folded is None:
            self._folded = self.shape.lower()
        return self._folded

    def spans(self, trigger: Trigger) -> list[tuple[int, int]]:
        """The (start, end) of the trigger's matches, in order of start.

        Every position where the trigger matches lies in one of them (a search
        resumes where the last match ended), so a match of the pattern it guards
        starts in some `[start - lead, end)`.
        """
        spans = self._spans.get(trigger)
        if spans is None:
            spans = _spans(trigger.regex, trigger.literal[:1], self._source(trigger))
            self._spans[trigger] = spans
        return spans

    def search(self, triggers: Iterable[Trigger]) -> None:
        """Find the spans of all `triggers`: one pass over the shape per leading byte.

        Each pass stops where any of its triggers matches (`_union`); there each
        trigger is tried, so its spans may overlap but still cover every place it
        matches.
        """
        groups: dict[tuple[bytes, bool], list[Trigger]] = {}
        for trigger in dict.fromkeys(triggers):
            if trigger not in self._spans:
                groups.setdefault((trigger.literal[:1], trigger.folded), []).append(trigger)
        for (first, _), members in groups.items():
            if len(members) == 1:
                self.spans(members[0])
                continue
            source = self._source(members[0])
            found: dict[Trigger, list[tuple[int, int]]] = {member: [] for member in members}
            for position, _ in _spans(_union(tuple(members)), first, source):
                for member in members:
                    if (match := member.regex.match(source, position)) is not None:
                        found[member].append(match.span())
            self._spans.update(found)

    def _source(self, trigger: Trigger) -> bytes:
        return self.folded if trigger.folded else self.shape


@lru_cache(maxsize=64)
def _union(members: tuple[Trigger, ...]) -> re.Pattern[bytes]:
    """A one-byte match wherever one of `members` (all with the same first byte) matches."""
    rests = (re.escape(m.literal[1:]) + (b"(?:%s)" % m.then if m.then else b"") for m in members)
    return re.compile(re.escape(members[0].literal[:1]) + b"(?=%s)" % b"|".join(rests))


# Places of a trigger's first byte tried one by one (`bytes.find` of one byte is
# a memchr) before the rest of the text goes to `re`, which is faster when they
# are many.
_FOUND_ONE_BY_ONE = 16


def _spans(regex: re.Pattern[bytes], first: bytes, source: bytes) -> list[tuple[int, int]]:
    """What `regex.finditer(source)` finds, fast when `first`, its first byte, is rare."""
    spans: list[tuple[int, int]] = []
    position = source.find(first)
    for _ in range(_FOUND_ONE_BY_ONE):
        if position < 0:
            return spans
        found = regex.match(source, position)
        if found is None:
            position = source.find(first, position + 1)
        else:
            spans.append(found.span())
            position = source.find(first, found.end())
    if position >= 0:
        spans.extend(found.span() for found in regex.finditer(source, position))
    return spans


def _shape(text: str) -> bytes:
    if text.isascii():
        return text.encode("ascii").translate(_DIGITS)
    shaped = bytearray(text.encode("ascii", "replace").translate(_DIGITS))
    # Visit every `?` when they are few; otherwise let `re` find the digits.
    if shaped.count(_UNKNOWN) <= len(shaped) >> 6:
        _mark_each_unknown(text, shaped)
    else:
        _mark_digits_and_lookalikes(text, shaped)
    return bytes(shaped)


def _mark_each_unknown(text: str, shaped: bytearray) -> None:
    position = shaped.find(_UNKNOWN)
    while position >= 0:
        char = text[position]
        if char.isdecimal():
            shaped[position] = ord("0")
        elif char in ASCII_LOOKALIKES:
            shaped[position] = ord(ASCII_LOOKALIKES[char])
        position = shaped.find(_UNKNOWN, position + 1)


def _mark_digits_and_lookalikes(text: str, shaped: bytearray) -> None:
    for digit in _NON_ASCII_DIGIT.finditer(text):
        shaped[digit.start()] = ord("0")
    for char, letter in ASCII_LOOKALIKES.items():
        position = text.find(char)
        while position >= 0:
            shaped[position] = ord(letter)
            position = text.find(char, position + 1)


_last: tuple[str, TextShape] | None = None


def shape_of(text: str) -> TextShape:
    """The shape of `text`, built once however many detectors ask for it.

    Keyed on the string object itself (no hashing of a long prompt); one entry,
    swapped whole, so concurrent scans at worst build a shape twice.
    """
    global _last
    last = _last
    if last is not None and last[0] is text:
        return last[1]
    shaped = TextShape(text)
    _last = (text, shaped)
    return shaped
