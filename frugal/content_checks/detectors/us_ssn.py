"""US_SSN: US Social Security numbers written AAA-GG-SSSS.

Pure layer of the shared library (one detector). Numbers the SSA never issues are not
SSNs (SSA, "Social Security Number Randomization", 2011): area 000, 666 and
900-999, group 00, serial 0000; nor are the two numbers printed in old
advertisements (078-05-1120, 219-09-9999).
"""

from __future__ import annotations

import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "US_SSN"

_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w]|-\d)")
_ADVERTISED = frozenset({"078-05-1120", "219-09-9999"})


def _validate(text: str, start: int, end: int) -> int | None:
    return None if text[start:end] in _ADVERTISED else end


# AAA-GG-SSSS as shaped (every digit `0`).
_TRIGGER = Trigger(b"000-00-0000")

DETECTOR = PatternDetector(
    CATEGORY, [PatternSpec(_SSN, charset("0-9-"), 11, validate=_validate, trigger=_TRIGGER)]
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
