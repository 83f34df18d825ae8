"""From growing token lists to text deltas: detokenization, stop strings, finish reasons.

The tokenizer here is a byte tokenizer (one token per UTF-8 byte, as byte-level BPE falls
back to for rare characters), so a multi-byte character is always split across tokens. The
same properties are checked with the real SmolLM2 tokenizer in
tests/integration/test_transformers_backend.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from engine_workers.backends.token_stream import (
    IncrementalDetokenizer,
    OutputTracker,
    StopStringMatcher,
)

EOS = 256


def encode(text: str) -> list[int]:
    return list(text.encode())


def decode(ids: Sequence[int]) -> str:
    return bytes(i for i in ids if i != EOS).decode(errors="replace")


def chunked(ids: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % (len(ids) + 1) for c in cuts} | {0, len(ids)})
    return [ids[a:b] for a, b in itertools.pairwise(points)]


TEXT = st.text(alphabet=st.sampled_from("ab é€😀中\n"), max_size=40)


@given(TEXT, st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_deltas_join_to_the_text_and_never_split_a_character(text: str, cuts: list[int]) -> None:
    detokenizer = IncrementalDetokenizer(decode)
    deltas = [detokenizer.push(chunk) for chunk in chunked(encode(text), cuts)]
    deltas.append(detokenizer.flush())
    assert "".join(deltas) == text
    assert all("\ufffd" not in delta for delta in deltas)


def test_an_incomplete_character_is_held_until_its_last_byte() -> None:
    detokenizer = IncrementalDetokenizer(decode)
    euro = encode("€")
    assert detokenizer.push(encode("a") + euro[:2]) == ""
    assert detokenizer.push(euro[2:]) == "a€"


def test_flush_releases_an_incomplete_character_as_a_replacement() -> None:
    detokenizer = IncrementalDetokenizer(decode)
    assert detokenizer.push(encode("€")[:1]) == ""
    assert detokenizer.flush() == "\ufffd"


@given(TEXT, st.sampled_from(["b", "é€", "ab", "😀中"]), st.lists(st.integers(0, 60), max_size=8))
def test_a_stop_string_ends_the_text_before_it(text: str, stop: str, cuts: list[int]) -> None:
    matcher = StopStringMatcher([stop])
    pieces = [matcher.feed(piece) for piece in _split(text, cuts)]
    pieces.append(matcher.flush())
    index = text.find(stop)
    assert "".join(pieces) == (text if index < 0 else text[:index])
    assert matcher.matched == (index >= 0)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("AY") == "STAY"
    assert matcher.feed("ST") == ""
    assert matcher.feed("OP and more") == ""
    assert matcher.matched


def test_the_earliest_of_several_stop_strings_wins() -> None:
    matcher = StopStringMatcher(["zz", "b"])
    assert matcher.feed("a b zz") == "a "


def tracker(stops: Sequence[str] = (), max_tokens: int = 100) -> OutputTracker:
    return OutputTracker(decode, {EOS}, stops, max_tokens)


def test_cumulative_lists_give_only_the_new_text() -> None:
    output = tracker()
    assert output.update(encode("ab")).text == "ab"
    assert output.update(encode("abc")).text == "c"
    assert output.completion_tokens == 3


def test_end_of_sequence_finishes_with_stop_and_is_not_text() -> None:
    output = tracker()
    output.update(encode("hi"))
    step = output.update([*encode("hi"), EOS], engine_finished=True)
    assert (step.text, step.finish_reason, step.cancel) == ("", "stop", False)
    assert output.completion_tokens == 3  # the end-of-sequence token counts, as in vLLM


def test_max_tokens_finishes_with_length() -> None:
    step = tracker(max_tokens=3).update(encode("abc"), engine_finished=True)
    assert (step.text, step.finish_reason) == ("abc", "length")


def test_a_stop_string_finishes_with_stop_and_asks_for_a_cancel() -> None:
    output = tracker(stops=["c"])
    step = output.update(encode("abcd"))
    assert (step.text, step.finish_reason, step.cancel) == ("ab", "stop", True)
    assert output.update(encode("abcde")).text == ""


def test_text_held_for_a_stop_string_comes_out_at_the_end() -> None:
    output = tracker(stops=["xyz"])
    assert output.update(encode("abx")).text == "ab"
    step = output.update([*encode("abx"), EOS], engine_finished=True)
    assert (step.text, step.finish_reason) == ("x", "stop")
