"""EMAIL: addresses such as `jane.doe+news@mail.example.co.uk`.

Pure layer of the shared library (one detector). The local part follows RFC 5321's 64
character limit; the domain needs at least one dot and an alphabetic TLD, so
`user@localhost`, `@mentions` and `name@1.2.3` are not addresses.
"""

from __future__ import annotations

import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "EMAIL"

_LOCAL = r"[A-Za-z0-9_%+-](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(
    rf"(?<![A-Za-z0-9._%+-]){_LOCAL}@(?:{_LABEL}\.){{1,6}}[A-Za-z]{{2,24}}"
    r"(?![A-Za-z0-9_-]|\.[A-Za-z0-9]|@)"
)

SPEC = PatternSpec(
    regex=_EMAIL,
    alphabet=charset("A-Za-z0-9._%+@-"),
    max_length=64 + 1 + 6 * 64 + 24,
    # The `@` comes after a local part of at most 64 characters.
    trigger=Trigger(b"@", lead=64),
)
DETECTOR = PatternDetector(CATEGORY, [SPEC])


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
