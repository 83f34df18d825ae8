"""Pattern triggers: the fast path finds exactly what searching every pattern everywhere finds.

Property tests (hypothesis) compare each pattern's `find`, every detector's raw matches
and `scan` with the straightforward path of tests/helpers/content_reference.py, on
random texts mixing words, digits, punctuation, `@`, non-ASCII characters and planted
values, sensitive or nearly so. Also checked: what a text's shape is, and the list of
non-ASCII characters `re` matches to ASCII letters.
"""

from __future__ import annotations

import random
import re
import string
import sys
from collections.abc import Iterable
from re._constants import (  # type: ignore[import-not-found]
    ASSERT,
    ASSERT_NOT,
    BRANCH,
    IN,
    LITERAL,
    MAX_REPEAT,
    MIN_REPEAT,
    RANGE,
    SUBPATTERN,
)
from re._parser import parse  # type: ignore[import-not-found]
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugal.content_checks import DEFAULT_POLICY, DETECTORS, ContentPolicy, scan
from frugal.content_checks.pattern import PatternDetector, PatternSpec
from frugal.content_checks.policy import detectors_for, find_all
from frugal.content_checks.shape import ASCII_LOOKALIKES, TextShape
from tests.helpers.content_reference import (
    reference_find_all,
    reference_scan,
    reference_spec_find,
)
from tests.unit.test_checks_detectors import LOOK_ALIKES, POSITIVES, TERMS

ALL = ContentPolicy(detectors=DETECTORS.names(), blocklist=TERMS)
PATTERNS = [
    (detector.name, spec)
    for detector in detectors_for(ALL)
    if isinstance(detector, PatternDetector)
    for spec in detector.specs
    if isinstance(spec, PatternSpec)
]
SETTINGS = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

WORDS = st.sampled_from(
    "the laws key Key AWS aws_secret_access_key secret desk sk task- xox Jan eyJ ghp github "
    "AKIA ASIA AIza DE GB BEGIN PRIVATE KEY ----- port host v1.2 x".split()
)
DIGITS = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
PUNCTUATION = st.sampled_from(list(" .,-:;@+()_/=\"'\n\t#?!%[]"))
# Digits of other scripts, the letters `re` folds to ASCII ones, and a few others.
NON_ASCII = st.sampled_from(
    ["\u0663", "\uff10\uff11", "\u0967\u0968\u0969", "\u017f", "\u212a", "\u0130", "\u0131"]
)
OTHER_SCRIPTS = st.sampled_from(["é", "\u201c", "\u2014", "中文", "\U0001f600", "\u00a0", "\u2028"])
PLANTED = st.sampled_from([value for _, _, value in POSITIVES] + LOOK_ALIKES)
# Arabic-Indic digits: `\d` matches them and the validators read them (int(), Luhn).
UNICODE_CARD = "\u0664" + "\u0661" * 15


def pattern_match(spec: PatternSpec) -> st.SearchStrategy[str]:
    """Strings the spec's regex matches somewhere (any script for `\\d`)."""
    return st.from_regex(spec.regex)


NOISE = st.one_of(
    WORDS, DIGITS, PUNCTUATION, NON_ASCII, OTHER_SCRIPTS, PLANTED, st.just(UNICODE_CARD)
)
MATCHES = st.one_of(*(pattern_match(spec) for _, spec in PATTERNS))
TEXTS = st.lists(st.one_of(NOISE, MATCHES, st.text()), max_size=24).map("".join)


@pytest.mark.parametrize(
    ("category", "spec"),
    [pytest.param(name, spec, id=f"{name}-{spec.regex.pattern[:24]}") for name, spec in PATTERNS],
)
@SETTINGS
@given(data=st.data())
def test_each_pattern_finds_what_a_whole_text_search_finds(
    category: str, spec: PatternSpec, data: st.DataObject
) -> None:
    pieces = st.one_of(pattern_match(spec), NOISE)
    text = data.draw(st.lists(pieces, min_size=1, max_size=10).map("".join))
    start = data.draw(st.integers(0, len(text)))
    assert list(spec.find(category, text, start)) == reference_spec_find(
        spec, category, text, start
    )


@settings(SETTINGS, max_examples=400)
@given(text=TEXTS, cut=st.floats(0, 1))
def test_every_detector_finds_what_the_reference_finds(text: str, cut: float) -> None:
    start = int(cut * len(text))
    assert find_all(text, detectors_for(ALL), start) == reference_find_all(text, ALL, start)
    assert scan(text, DEFAULT_POLICY) == reference_scan(text, DEFAULT_POLICY)


def seeded_text(rng: random.Random, size: int) -> str:
    alphabet = string.ascii_letters + string.digits * 3 + " .,-:;@+()_/=\n" + "\u0663\u017f"
    planted = [value for _, _, value in POSITIVES] + LOOK_ALIKES + [UNICODE_CARD]
    pieces: list[str] = []
    while sum(map(len, pieces)) < size:
        if rng.random() < 0.05:
            pieces.append(rng.choice(planted))
        else:
            pieces.append("".join(rng.choices(alphabet, k=rng.randint(1, 12))))
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(8))
def test_long_seeded_texts_scan_like_the_reference(seed: int) -> None:
    text = seeded_text(random.Random(seed), 20_000)
    found = scan(text, ALL)
    assert found == reference_scan(text, ALL)
    assert found  # the planted values are there


def consumed(parsed: Iterable[tuple[Any, Any]]) -> set[str]:
    """ASCII characters, or names of categories, that a parsed regex can consume."""
    chars: set[str] = set()
    for op, arg in parsed:
        if op is LITERAL:
            chars.add(chr(arg))
        elif op is IN:
            for item, value in arg:
                if item is RANGE:
                    chars.update(map(chr, range(value[0], value[1] + 1)))
                else:
                    chars.add(chr(value) if item is LITERAL else str(value))
        elif op in (MAX_REPEAT, MIN_REPEAT):
            chars |= consumed(arg[2])
        elif op is SUBPATTERN:
            chars |= consumed(arg[3])
        elif op is BRANCH:
            chars = chars.union(*map(consumed, arg[1]))
        else:  # lookarounds read one character past a match at most
            assert op in (ASSERT, ASSERT_NOT), op
    return chars


@pytest.mark.parametrize(
    "spec", [spec for _, spec in PATTERNS if spec.trigger is not None], ids=repr
)
def test_triggered_patterns_consume_only_their_alphabet_and_digits(spec: PatternSpec) -> None:
    # What lets a search stop after the first character outside the alphabet
    # (pattern.py); `\d` is in the alphabet as every digit is `0` in a shape.
    chars = consumed(parse(spec.regex.pattern))
    assert chars - spec.alphabet <= {"CATEGORY_DIGIT"}
    if "CATEGORY_DIGIT" in chars:
        assert set(string.digits) <= spec.alphabet


def expected_shape(text: str) -> bytes:
    def byte(char: str) -> str:
        if char.isdecimal():
            return "0"
        if char.isascii():
            return char
        return ASCII_LOOKALIKES.get(char, "?")

    return "".join(map(byte, text)).encode("ascii")


PROSE = "Plain words, then more plain words. " * 8


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.text(), NON_ASCII, OTHER_SCRIPTS, DIGITS, st.sampled_from(["?", "?" * 80, PROSE])
        ),
        max_size=12,
    ).map("".join)
)
def test_a_shape_is_one_byte_per_character(text: str) -> None:
    # Texts with few and with many `?` take both ways of marking non-ASCII characters.
    assert TextShape(text).shape == expected_shape(text)


def test_ascii_lookalikes_are_every_character_re_folds_to_an_ascii_letter() -> None:
    letter = re.compile("(?i)[a-z]")
    found = {chr(code) for code in range(0x80, sys.maxunicode + 1) if letter.fullmatch(chr(code))}
    assert found == set(ASCII_LOOKALIKES)
    for char, ascii_letter in ASCII_LOOKALIKES.items():
        assert re.fullmatch(f"(?i){ascii_letter}", char)


def test_a_unicode_digit_card_is_found_as_before() -> None:
    text = f"card {UNICODE_CARD} ok"
    assert scan(text, DEFAULT_POLICY) == reference_scan(text, DEFAULT_POLICY) != []
