"""What a content detector finds, and the one interface every detector implements.

Pure layer of the shared library (the "Safety Module" of the ScaleLLM paper). A `Match` is
only a category and a span: the sensitive text itself is never copied out of
the string it was found in, so it cannot end up in a log or a metric label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from frugal.content_checks.shape import Trigger


@dataclass(frozen=True)
class Match:
    """A sensitive span `text[start:end]` of one category (e.g. "EMAIL")."""

    category: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"empty or negative span {self.start}:{self.end}")

    @property
    def length(self) -> int:
        return self.end - self.start

    def shifted(self, offset: int) -> Match:
        return Match(self.category, self.start + offset, self.end + offset)


class Detector(Protocol):
    """One category of sensitive content.

    `find(text, start)` returns the matches that start at or after `start`
    (earlier characters are context, e.g. for word boundaries), in order.

    `unsettled_from(text, start)` is what lets a stream release text early: the
    earliest index >= `start` at which a match could still start, or a match
    found by `find` could still grow or vanish, once more text is appended;
    `len(text)` when nothing is pending. Every answer `find` gives for matches
    starting before it is final.

    `max_match_length` bounds a match (None: unbounded); together with the
    characters a scan may peek past it, it bounds how much a stream holds back.

    `triggers` are the byte regexes over a text's shape (shape.py) whose spans
    `find` looks up; `find_all` searches those of all a policy's detectors
    together. A detector that searches the text itself has none.
    """

    @property
    def name(self) -> str: ...

    @property
    def max_match_length(self) -> int | None: ...

    @property
    def triggers(self) -> tuple[Trigger, ...]: ...

    def find(self, text: str, start: int = 0) -> list[Match]: ...

    def unsettled_from(self, text: str, start: int = 0) -> int: ...
