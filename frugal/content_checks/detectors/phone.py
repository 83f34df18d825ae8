"""PHONE: E.164 and common US / European national formats.

Pure layer of the shared library (one detector). Three shapes, each validated on its
digits so that plain long numbers, dates, versions and IP addresses are left
alone:
- international: `+` country code then groups (`+44 20 7946 0958`,
  `+1 (415) 555-2671`, `+14155552671`); 8-15 digits (ITU-T E.164), at least 10
  when written without separators;
- NANP: `(415) 555-2671`, `415.555.2671`, `1-800-555-0199`; area code and
  exchange start with 2-9;
- European trunk-prefixed: `020 7946 0958`, `06 12 34 56 78`, `030 12345678`;
  10-12 digits with at least one separator (a date has 8).
"""

from __future__ import annotations

import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "PHONE"

_ALPHABET = charset("0-9 .()+-")
_END = r"(?!\d|[.-]\d)"

_INTERNATIONAL = re.compile(
    r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,8})){1,6}" + _END
)
_NANP = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\((?P<area1>\d{3})\)[ ]?|(?P<area2>\d{3})[ .-])"
    r"(?P<exchange>\d{3})[ .-]\d{4}" + _END
)
# Not right after a group of four capitals/digits: "DE89 0532 0130 00" is an IBAN.
_EUROPEAN = re.compile(r"(?<![\w+.-])(?<![A-Z0-9]{4}[ ])0\d{1,4}(?:[ .-]\d{2,8}){1,4}" + _END)


# In a shape every digit is `0` (shape.py). A NANP number's exchange starts at most
# 8 characters in (`1-(415) `); a European one has 10 digits, two of them first,
# at most one separator between two.
_INTERNATIONAL_TRIGGER = Trigger(b"+", b"0")
_NANP_TRIGGER = Trigger(b"000", rb"[ .-]0000", lead=8)
_EUROPEAN_TRIGGER = Trigger(b"00", rb"(?:[ .-]?0){8}")


def _digits(text: str, start: int, end: int) -> int:
    return sum(ch.isdigit() for ch in text[start:end])


def _valid_international(text: str, start: int, end: int) -> int | None:
    digits = _digits(text, start, end)
    compact = digits == end - start - 1
    return end if 8 <= digits <= 15 and (digits >= 10 or not compact) else None


def _valid_nanp(text: str, start: int, end: int) -> int | None:
    found = _NANP.match(text, start, end)
    if found is None:
        return None
    area = found.group("area1") or found.group("area2")
    return end if area[0] in "23456789" and found.group("exchange")[0] in "23456789" else None


def _valid_european(text: str, start: int, end: int) -> int | None:
    return end if 10 <= _digits(text, start, end) <= 12 else None


DETECTOR = PatternDetector(
    CATEGORY,
    [
        PatternSpec(
            _INTERNATIONAL,
            _ALPHABET,
            4 + 6 * 9,
            validate=_valid_international,
            trigger=_INTERNATIONAL_TRIGGER,
        ),
        PatternSpec(_NANP, _ALPHABET, 2 + 6 + 4 + 4, validate=_valid_nanp, trigger=_NANP_TRIGGER),
        PatternSpec(
            _EUROPEAN, _ALPHABET, 5 + 4 * 9, validate=_valid_european, trigger=_EUROPEAN_TRIGGER
        ),
    ],
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
