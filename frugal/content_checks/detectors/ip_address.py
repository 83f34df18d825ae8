"""IP_ADDRESS: IPv4 dotted quads and IPv6 addresses.

Pure layer of the shared library (one detector). IPv4 octets are 0-255 without leading
zeros and the quad must stand alone (`10.0.19041.1`, `1.2.3.4.5` and
`300.1.1.1` are not addresses). IPv6 candidates (hex groups and colons, an
optional trailing IPv4) are accepted only if the `ipaddress` module parses
them, which rules out clock times and MAC addresses; the bare `::` is ignored.
"""

from __future__ import annotations

import ipaddress
import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "IP_ADDRESS"

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\d)"
)


# As shaped (every digit `0`): the last digit of the first octet (at most 2
# characters in) and the three dots; two colons at most 4 hex digits apart, the
# first at most 4 characters in.
_IPV4_TRIGGER = Trigger(b"0.", rb"0{1,3}\.0{1,3}\.0", lead=2)
_IPV6_TRIGGER = Trigger(b":", rb"[0A-Fa-f]{0,4}:", lead=4)


def _valid_ipv4(text: str, start: int, end: int) -> int | None:
    try:
        ipaddress.IPv4Address(text[start:end])
    except ValueError:
        return None
    return end


def _valid_ipv6(text: str, start: int, end: int) -> int | None:
    candidate = text[start:end]
    if candidate.strip(":") == "":
        return None
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return end


DETECTOR = PatternDetector(
    CATEGORY,
    [
        PatternSpec(_IPV4, charset("0-9."), 15, validate=_valid_ipv4, trigger=_IPV4_TRIGGER),
        PatternSpec(_IPV6, charset("0-9A-Fa-f:."), 45, validate=_valid_ipv6, trigger=_IPV6_TRIGGER),
    ],
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
