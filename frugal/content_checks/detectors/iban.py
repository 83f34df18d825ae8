"""IBAN: International Bank Account Numbers, with or without spaces.

Pure layer of the shared library (one detector). Country code, two check digits, then the
BBAN; the length must be the one the country registered (SWIFT IBAN Registry)
and the whole number must pass ISO 7064 mod 97-10 (ISO 13616). When a run is
longer than its country's IBAN (words in capitals after it), the IBAN is cut
at the registered length if that falls on a space.
"""

from __future__ import annotations

import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "IBAN"

_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)

# SWIFT IBAN Registry, total lengths per country.
_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def mod97_valid(compact: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to 10..35."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _validate(text: str, start: int, end: int) -> int | None:
    expected = _LENGTHS.get(text[start : start + 2])
    if expected is None:
        return None
    seen = 0
    for index in range(start, end):
        if text[index] != " ":
            seen += 1
        if seen == expected:
            cut = index + 1
            if cut != end and text[cut] != " ":
                return None
            compact = text[start:cut].replace(" ", "")
            return cut if mod97_valid(compact) else None
    return None


# The check digits after the country code, then two groups of four, as shaped
# (every digit `0`); the digits start two characters in.
_TRIGGER = Trigger(b"00", rb"(?<=[A-Z]{2}00)(?: ?[A-Z0]{4}){2}", lead=2)

DETECTOR = PatternDetector(
    CATEGORY,
    [
        PatternSpec(
            _CANDIDATE, charset("A-Z0-9 "), 4 + 7 * 5 + 4, validate=_validate, trigger=_TRIGGER
        )
    ],
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
