"""StreamRedactor: chunked output is redacted exactly like the whole text.

Property tests (hypothesis): corpus rows and random text cut at random
boundaries into any number of chunks.
"""

from __future__ import annotations

import itertools
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugal.content_checks import (
    ContentPolicy,
    Match,
    StreamRedactor,
    StreamResult,
    load_blocklist,
    redact,
    scan,
)
from frugal.content_checks.detectors.secret import PEM_CAP
from frugal.content_checks.evaluate import CorpusRow, corpus_policy, read_corpus

FIXTURES = Path(__file__).parents[1] / "fixtures" / "content"
ROWS = read_corpus(FIXTURES / "corpus.jsonl")
POSITIVES = [row for row in ROWS if row.label == "positive"]
NEGATIVES = [row for row in ROWS if row.label == "negative"]
POLICY = corpus_policy(load_blocklist(FIXTURES / "blocklist.txt"))
BLOCKING = POLICY.model_copy(update={"output_action": "block"})
SETTINGS = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def chunked(draw: st.DrawFn, rows: list[CorpusRow]) -> tuple[CorpusRow, list[str]]:
    row = draw(st.sampled_from(rows))
    return row, draw(cuts(row.text))


def cuts(text: str) -> st.SearchStrategy[list[str]]:
    positions = st.lists(st.integers(0, len(text)), max_size=min(len(text), 40))
    return positions.map(lambda points: split_at(text, points))


def split_at(text: str, points: list[int]) -> list[str]:
    bounds = [0, *sorted(points), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def stream(policy: ContentPolicy, chunks: list[str]) -> tuple[str, Match | None, StreamRedactor]:
    redactor = StreamRedactor(policy)
    results: list[StreamResult] = [redactor.feed(chunk) for chunk in chunks]
    results.append(redactor.finish())
    blocked = next((r.blocked for r in results if r.blocked is not None), None)
    return "".join(r.text for r in results), blocked, redactor


@SETTINGS
@given(chunked(POSITIVES))
def test_positive_never_leaks_and_matches_whole_text_redaction(
    case: tuple[CorpusRow, list[str]],
) -> None:
    row, chunks = case
    assert row.start is not None and row.end is not None
    out, blocked, redactor = stream(POLICY, chunks)
    assert blocked is None
    assert out == redact(row.text, scan(row.text, POLICY))
    assert row.text[row.start : row.end] not in out
    assert redactor.max_held <= redactor.hold_back_bound


@SETTINGS
@given(chunked(NEGATIVES))
def test_negative_comes_out_unchanged(case: tuple[CorpusRow, list[str]]) -> None:
    row, chunks = case
    assert stream(POLICY, chunks)[0] == row.text


@SETTINGS
@given(chunked(POSITIVES))
def test_block_mode_reports_the_match_and_emits_nothing_of_it(
    case: tuple[CorpusRow, list[str]],
) -> None:
    row, chunks = case
    out, blocked, _ = stream(BLOCKING, chunks)
    first = scan(row.text, BLOCKING)[0]
    assert blocked == first
    assert out == row.text[: first.start]


NOISY = st.text(
    alphabet=string.ascii_letters[:8] + "AKIZFR" + "0123456789" * 3 + " .-:@+()_\n",
    max_size=120,
)
PIECES = st.sampled_from(
    [
        *("jane@example.com", "4111 1111 1111 1111", "+1 415 555 2671", "123-45-6789", "::1"),
        *("DE89 3704 0044 0532 0130 00", "10.0.0.1", "bluefalcon", "sk-", "-----BEGIN "),
    ]
)


@SETTINGS
@given(
    st.lists(st.one_of(NOISY, PIECES), max_size=8)
    .map("".join)
    .flatmap(lambda text: st.tuples(st.just(text), cuts(text)))
)
def test_any_text_streams_like_the_whole_text(case: tuple[str, list[str]]) -> None:
    text, chunks = case
    assert stream(POLICY, chunks)[0] == redact(text, scan(text, POLICY))


def test_prose_is_released_word_by_word() -> None:
    redactor = StreamRedactor(POLICY)
    sentence = "The quick brown fox jumps over the lazy dog, then rests by the river. " * 5
    out = "".join(redactor.feed(ch).text for ch in sentence)
    assert redactor.max_held <= 8
    assert out + redactor.finish().text == sentence


def test_pem_block_is_held_until_its_end_line() -> None:
    begin, end = "-----BEGIN " + "PRIVATE KEY-----\n", "\n-----END " + "PRIVATE KEY-----"
    redactor = StreamRedactor(POLICY)
    out = redactor.feed("key: " + begin).text
    for _ in range(20):
        out += redactor.feed("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n").text
    assert out == "key: "
    out += redactor.feed(end + " done").text + redactor.finish().text
    assert out == "key: [REDACTED:SECRET] done"


def test_pem_block_without_end_is_released_redacted_after_the_cap() -> None:
    redactor = StreamRedactor(POLICY)
    header = "-----BEGIN " + "RSA PRIVATE KEY-----\n"
    line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0MTIzNDU2Nzg5MGFiY2RlZmdo\n"
    lines = 2 * PEM_CAP // len(line)
    out = redactor.feed(header).text
    for _ in range(lines):
        out += redactor.feed(line).text
    # The first PEM_CAP characters after the header went out as one placeholder,
    # without waiting for the end of the stream.
    assert out.startswith("[REDACTED:SECRET]")
    assert out.count(line[:-1]) < lines - PEM_CAP // len(line)
    assert redactor.max_held <= redactor.hold_back_bound
    full = header + line * lines
    assert out + redactor.finish().text == redact(full, scan(full, POLICY))


def test_blocked_stream_stays_blocked() -> None:
    redactor = StreamRedactor(BLOCKING)
    assert redactor.feed("hi ").text == "hi"  # a space could still join a number
    result = redactor.feed("jane@example.com and more")
    assert result == StreamResult(" ", Match("EMAIL", 3, 19))
    assert redactor.feed("later text") == StreamResult("", Match("EMAIL", 3, 19))
    assert redactor.finish() == StreamResult("", Match("EMAIL", 3, 19))
