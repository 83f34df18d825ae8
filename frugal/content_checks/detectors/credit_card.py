"""CREDIT_CARD: payment card numbers (PANs), Luhn-checked, from known issuers.

Pure layer of the shared library (one detector). 13-19 digits, written solid or in groups
separated by one kind of separator (`4111 1111 1111 1111`, `3782-822463-10005`).
A candidate must pass the Luhn check (ISO/IEC 7812-1) and start with an issuer
prefix whose network uses that length, so order numbers and random digit runs
are left alone. When a run is longer than a card (a card followed by a year),
the longest valid prefix ending on a group boundary is taken.
"""

from __future__ import annotations

import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "CREDIT_CARD"

_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?!\d)")

# (lowest prefix, highest prefix, allowed lengths); prefixes compared on as
# many leading digits as they have. Ranges from the networks' published IIN
# tables (Visa, Mastercard 2-series, Amex, Discover, Diners, JCB, UnionPay,
# Maestro, Mir).
_ISSUERS: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),
    (51, 55, frozenset({16})),
    (2221, 2720, frozenset({16})),
    (34, 34, frozenset({15})),
    (37, 37, frozenset({15})),
    (6011, 6011, frozenset({16, 17, 18, 19})),
    (644, 649, frozenset({16, 17, 18, 19})),
    (65, 65, frozenset({16, 17, 18, 19})),
    (300, 305, frozenset({14, 15, 16, 17, 18, 19})),
    (36, 36, frozenset({14, 15, 16, 17, 18, 19})),
    (38, 39, frozenset({14, 15, 16, 17, 18, 19})),
    (3528, 3589, frozenset({16, 17, 18, 19})),
    (62, 62, frozenset({16, 17, 18, 19})),
    (50, 50, frozenset({13, 14, 15, 16, 17, 18, 19})),
    (56, 58, frozenset({13, 14, 15, 16, 17, 18, 19})),
    (2200, 2204, frozenset({16, 17, 18, 19})),
)


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 check digit test (ISO/IEC 7812-1 Annex B)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def known_issuer(digits: str) -> bool:
    for low, high, lengths in _ISSUERS:
        width = len(str(low))
        if len(digits) in lengths and low <= int(digits[:width]) <= high:
            return True
    return False


def _well_grouped(candidate: str) -> bool:
    separators = {ch for ch in candidate if not ch.isdigit()}
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = candidate.split(separators.pop())
    return len(groups[0]) == 4 and all(3 <= len(group) <= 6 for group in groups[1:])


def _validate(text: str, start: int, end: int) -> int | None:
    # Ends to try: the whole run, then each earlier group boundary.
    ends = [end] + [i for i in range(end - 1, start, -1) if not text[i].isdigit()]
    for cut in ends:
        candidate = text[start:cut]
        digits = candidate.replace(" ", "").replace("-", "")
        if len(digits) < 13:
            break
        if _well_grouped(candidate) and known_issuer(digits) and luhn_valid(digits):
            return cut
    return None


# What every accepted card starts with (solid, or a first group of four), as
# shaped (every digit `0`): four digits, then nine more, at most one separator
# between two.
_TRIGGER = Trigger(b"0000", rb"(?:[ -]?0){9}")

DETECTOR = PatternDetector(
    CATEGORY,
    [PatternSpec(_CANDIDATE, charset("0-9 -"), 19 + 18, validate=_validate, trigger=_TRIGGER)],
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
