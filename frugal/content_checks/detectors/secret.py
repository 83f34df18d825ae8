"""SECRET: credentials with a recognisable shape.

Pure layer of the shared library (one detector). One regex per credential kind, each
anchored on the literal prefix its issuer puts in front of every token (so a
stream only holds text back while such a prefix is being written):
AWS access key ids (AKIA/ASIA) and `aws_secret_access_key = ...` assignments,
GitHub tokens (ghp_/gho_/ghs_/ghu_/ghr_, github_pat_), Slack tokens
(xoxb-/xoxa-/xoxp-/xoxr-/xoxs-), OpenAI-style `sk-` / `sk-proj-` keys, Frugal's
own `sk-frugal-` keys (frugal/keys/format.py), Google API keys (AIza), JWTs
(the header must decode to a JSON object with "alg", RFC 7519 section 7.2) and
PEM private key blocks (RFC 7468), held until their END line.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from frugal.content_checks.match import Detector
from frugal.content_checks.pattern import PatternDetector, PatternSpec, charset
from frugal.content_checks.registry import DetectorOptions
from frugal.content_checks.shape import Trigger

CATEGORY = "SECRET"

_TOKEN = charset("A-Za-z0-9_-")


def _has_entropy(text: str, start: int, end: int) -> int | None:
    """Random keys mix digits, upper and lower case; `sk-learn-style-words` do not."""
    body = text[start:end]
    classes = (any(c.isdigit() for c in body), any(c.isupper() for c in body))
    return end if all(classes) and any(c.islower() for c in body) else None


def _b64url_json(segment: str) -> object:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return None


def _valid_jwt(text: str, start: int, end: int) -> int | None:
    header = _b64url_json(text[start:end].split(".", 1)[0])
    return end if isinstance(header, dict) and "alg" in header else None


# Triggers (shape.py) start with a character that is rare in prose where the
# prefix allows: the `_` of `ghp_`, the `-` of `sk-`, the `J` of `eyJ`.
_UPPER_A = Trigger(b"A", rb"[KS]IA|Iza")
_SK_DASH = Trigger(b"-", rb"(?<=sk-)", lead=2)

_AWS_KEY_ID = PatternSpec(
    re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
    charset("A-Z0-9"),
    20,
    prefixes=("AKIA", "ASIA"),
    trigger=_UPPER_A,
)
_AWS_SECRET = PatternSpec(
    re.compile(
        r"(?<![A-Za-z0-9_])(?i:aws_?secret_?(?:access_?)?key)[\"']?[ \t]{0,3}[:=][ \t]{0,3}"
        r"[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])[\"']?"
    ),
    charset("A-Za-z0-9_/+=:'\" \t"),
    25 + 1 + 3 + 1 + 3 + 1 + 40 + 1,
    prefixes=("aws",),
    ignore_case=True,
    trigger=Trigger(b"aws", folded=True),
)
_GITHUB = PatternSpec(
    re.compile(
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})"
        r"(?![A-Za-z0-9_])"
    ),
    charset("A-Za-z0-9_"),
    11 + 22 + 1 + 59,
    prefixes=("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_"),
    trigger=Trigger(b"_", rb"(?<=gh[pousr]_)|(?<=github_pat_)", lead=10),
)
_SLACK = PatternSpec(
    re.compile(r"(?<![A-Za-z0-9-])xox[abprs]-\d{1,13}-[A-Za-z0-9-]{8,90}(?![A-Za-z0-9-])"),
    charset("A-Za-z0-9-"),
    5 + 13 + 1 + 90,
    prefixes=("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"),
    trigger=Trigger(b"xox", rb"[abprs]-"),
)
# No trailing lookahead: a key longer than the bound is still cut at its start.
_OPENAI = PatternSpec(
    re.compile(r"(?<![A-Za-z0-9_-])sk-(?!frugal-)[A-Za-z0-9_-]{20,256}"),
    _TOKEN,
    3 + 256,
    prefixes=("sk-",),
    validate=_has_entropy,
    trigger=_SK_DASH,
)
_FRUGAL = PatternSpec(
    re.compile(r"(?<![A-Za-z0-9_-])sk-frugal-[A-Za-z0-9_]{20,200}"),
    _TOKEN,
    10 + 200,
    prefixes=("sk-frugal-",),
    trigger=_SK_DASH,
)
_GOOGLE = PatternSpec(
    re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"),
    _TOKEN,
    39,
    prefixes=("AIza",),
    trigger=_UPPER_A,
)
_JWT = PatternSpec(
    re.compile(
        r"(?<![A-Za-z0-9_.-])eyJ[A-Za-z0-9_-]{5,1000}\.[A-Za-z0-9_-]{2,4000}\.[A-Za-z0-9_-]{0,1000}"
        r"(?![A-Za-z0-9_-])"
    ),
    charset("A-Za-z0-9_.-"),
    3 + 1000 + 1 + 4000 + 1 + 1000,
    prefixes=("eyJ",),
    validate=_valid_jwt,
    trigger=Trigger(b"J", rb"(?<=eyJ)", lead=2),
)

# PEM private keys (RFC 7468): once a BEGIN line is seen everything up to the
# first END line is one match, so a stream holds it; the wait is capped (an
# RSA-4096 key is about 3.3 KiB). With no END line within the cap the header
# and the base64 body that follows it are still redacted.
PEM_CAP = 16 * 1024
_LABEL = r" (?:[A-Z0-9]{1,20} ){0,3}PRIVATE KEY(?: BLOCK)?-----"
_LABEL_MAX = 1 + 3 * 21 + 11 + 6 + 5
_PEM_HEADER = re.compile("-----BEGIN" + _LABEL)
_PEM_FOOTER = re.compile("-----END" + _LABEL)
_PEM = re.compile(
    rf"-----BEGIN{_LABEL}(?:[\s\S]{{0,{PEM_CAP}}}?-----END{_LABEL}|[A-Za-z0-9+/=\s:,-]{{0,{PEM_CAP}}})"
)
_HEADER_LEAD = "-----BEGIN "
_HEADER_REST = re.compile(rf"[A-Z0-9 ]{{0,{_LABEL_MAX}}}-{{0,5}}")


def _could_begin_header(tail: str) -> bool:
    if len(tail) <= len(_HEADER_LEAD):
        return _HEADER_LEAD.startswith(tail)
    rest = tail[len(_HEADER_LEAD) :]
    return tail.startswith(_HEADER_LEAD) and _HEADER_REST.fullmatch(rest) is not None


class PemSpec(PatternSpec):
    """PEM blocks: pending from a BEGIN line until its END line (or the cap)."""

    def unsettled_from(self, text: str, start: int) -> int:
        n = len(text)
        for header in _PEM_HEADER.finditer(text, max(start, n - self.max_read)):
            limit = header.end() + PEM_CAP + len("-----END") + _LABEL_MAX
            if _PEM_FOOTER.search(text, header.end(), limit) is None:
                return header.start()
        header_max = len(_HEADER_LEAD) + _LABEL_MAX
        for position in range(max(start, n - header_max), n):
            if _could_begin_header(text[position:]):
                return position
        return n


_PEM_BLOCK = PemSpec(
    _PEM,
    frozenset(),
    2 * (len("-----BEGIN") + _LABEL_MAX) + PEM_CAP,
)

DETECTOR = PatternDetector(
    CATEGORY,
    [_AWS_KEY_ID, _AWS_SECRET, _GITHUB, _SLACK, _OPENAI, _FRUGAL, _GOOGLE, _JWT, _PEM_BLOCK],
)


def build(options: DetectorOptions) -> Detector:
    return DETECTOR
