"""Unit tests of the sim engine's pure maths: step model, batching, tokenizer, stops, seeds."""

from __future__ import annotations

import random

import pytest

from engine_workers.backends.sim_batch import BatchScheduler
from engine_workers.backends.sim_model import (
    PROFILES,
    SequenceState,
    SimProfile,
    StopMatcher,
    generated_tokens,
    sequence_source,
    step_ms,
    step_seconds,
    subword_pieces,
)
from engine_workers.tokenizer import count_tokens, tokenize

NO_JITTER = SimProfile(jitter=0.0, output_tokens_min=8, output_tokens_max=8)


def _state(
    source: list[str], *, max_tokens: int | None = None, stops: tuple[str, ...] = ()
) -> SequenceState:
    return SequenceState(source, max_tokens=max_tokens, stops=stops, fault_after_tokens=None)


def _run(state: SequenceState) -> tuple[str, str]:
    pieces: list[str] = []
    for _ in range(10_000):
        step = state.advance()
        pieces.append(step.text)
        if step.finish_reason is not None:
            return "".join(pieces), step.finish_reason
    raise AssertionError("sequence never finished")


def _simulate_ttft(profile: SimProfile, prompts: dict[str, int]) -> dict[str, float]:
    """Drive the scheduler on a virtual clock; simulated ms to each request's first token."""
    batch = BatchScheduler(profile)
    for request_id, prompt_tokens in prompts.items():
        batch.submit(request_id, prompt_tokens, _state(generated_tokens(1, 4)))
    clock, ttft = 0.0, dict[str, float]()
    while not batch.idle:
        prefill = batch.admit()
        clock += step_ms(profile, batch.n_running, prefill)
        for output in batch.decode():
            ttft.setdefault(output.request_id, clock)
    return ttft


def test_named_profiles_match_simulator_md() -> None:
    assert (PROFILES["tp8"].a_ms, PROFILES["tp8"].b_ms, PROFILES["tp8"].max_batch) == (
        5.0,
        0.1,
        256,
    )
    assert (PROFILES["tp2"].a_ms, PROFILES["tp2"].b_ms, PROFILES["tp2"].max_batch) == (
        8.4,
        0.13,
        128,
    )
    # docs/simulator.md: ~30.6 ms per step for 256 sequences on tp8, ~16.7 ms for 64 on tp2.
    assert step_ms(PROFILES["tp8"], 256, 0) == pytest.approx(30.6)
    assert step_ms(PROFILES["tp2"], 64, 0) == pytest.approx(16.72)


def test_step_time_grows_with_batch_and_prefill() -> None:
    times = [step_ms(NO_JITTER, n, 0) for n in (1, 8, 64, 128)]
    assert times == sorted(times) and times[0] < times[-1]
    assert step_ms(NO_JITTER, 4, 1000) > step_ms(NO_JITTER, 4, 10)


def test_step_seconds_scales_with_time_scale_and_jitter_is_bounded() -> None:
    rng = random.Random(0)
    base = step_ms(NO_JITTER, 10, 0) / 1000.0
    assert step_seconds(NO_JITTER, 10, 0, rng) == pytest.approx(base)
    scaled = NO_JITTER.model_copy(update={"time_scale": 0.1})
    assert step_seconds(scaled, 10, 0, rng) == pytest.approx(base * 0.1)
    jittery = NO_JITTER.model_copy(update={"jitter": 0.05})
    samples = [step_seconds(jittery, 10, 0, rng) for _ in range(200)]
    assert all(base * 0.95 <= s <= base * 1.05 for s in samples)
    assert len(set(samples)) > 1


def test_jitter_is_reproducible_from_the_seed() -> None:
    profile = SimProfile(jitter=0.1)
    first = [step_seconds(profile, 3, 0, random.Random(7)) for _ in range(3)]
    again = [step_seconds(profile, 3, 0, random.Random(7)) for _ in range(3)]
    assert first == again


def test_ttft_grows_with_prompt_length() -> None:
    short = _simulate_ttft(NO_JITTER, {"short": 10})["short"]
    long = _simulate_ttft(NO_JITTER, {"long": 4000})["long"]
    assert long > short
    assert short == pytest.approx(step_ms(NO_JITTER, 1, 10))


def test_ttft_grows_with_queueing_when_the_batch_is_full() -> None:
    profile = NO_JITTER.model_copy(update={"max_batch": 2})
    ttft = _simulate_ttft(profile, {f"r{i}": 10 for i in range(6)})
    assert ttft["r0"] == ttft["r1"]
    assert ttft["r0"] < ttft["r2"] < ttft["r4"]


def test_kv_budget_holds_requests_back() -> None:
    profile = NO_JITTER.model_copy(update={"kv_budget_tokens": 100})
    batch = BatchScheduler(profile)
    for i in range(3):
        batch.submit(f"r{i}", 40, _state(generated_tokens(1, 8)))  # 48 tokens reserved each
    batch.admit()
    assert (batch.n_running, batch.n_waiting) == (2, 1)
    assert 0.0 < batch.kv_usage() <= 1.0
    assert batch.abort("r0") and not batch.abort("r0")
    batch.admit()
    assert (batch.n_running, batch.n_waiting) == (2, 0)


def test_one_token_per_running_sequence_per_step() -> None:
    batch = BatchScheduler(NO_JITTER)
    for i in range(3):
        batch.submit(f"r{i}", 5, _state(generated_tokens(i, 8)))
    batch.admit()
    outputs = batch.decode()
    assert sorted(o.request_id for o in outputs) == ["r0", "r1", "r2"]
    assert batch.tokens_generated == 3


@pytest.mark.parametrize(
    "text",
    ["", "hello", "  Hello,   world!\n\tnew line  ", "a b c", "émoji 🙂 ok ", "\n\n"],
)
def test_tokenizer_round_trip(text: str) -> None:
    tokens = tokenize(text)
    assert "".join(tokens) == text
    assert count_tokens(text) == len(tokens)
    assert tokenize("".join(tokens)) == tokens


def test_tokenizer_counts_words() -> None:
    assert count_tokens("one two  three") == 3
    assert tokenize("one two  three") == ["one", " two", "  three"]


def test_text_is_deterministic_from_the_seed() -> None:
    assert generated_tokens(42, 50) == generated_tokens(42, 50)
    assert generated_tokens(42, 50) != generated_tokens(43, 50)
    assert generated_tokens(42, 80)[:50] == generated_tokens(42, 50)
    a = sequence_source(echo_text=None, seed=5, profile=SimProfile())
    assert a == sequence_source(echo_text=None, seed=5, profile=SimProfile())
    assert SimProfile().output_tokens_min <= len(a) <= SimProfile().output_tokens_max
    assert count_tokens("".join(a)) == len(a)


def test_max_tokens_finishes_with_length() -> None:
    state = _state(generated_tokens(3, 20), max_tokens=5)
    text, finish = _run(state)
    assert finish == "length"
    assert state.generated == 5
    assert text == "".join(generated_tokens(3, 5))


def test_natural_end_finishes_with_stop() -> None:
    state = _state(generated_tokens(3, 6), max_tokens=100)
    text, finish = _run(state)
    assert (finish, state.generated, count_tokens(text)) == ("stop", 6, 6)


def test_stop_string_within_a_token() -> None:
    text, finish = _run(_state(tokenize("alpha beta gamma delta"), stops=("mm",)))
    assert (text, finish) == ("alpha beta ga", "stop")


def test_stop_string_split_across_tokens_is_held_back_and_not_emitted() -> None:
    state = _state(tokenize("one two three four"), stops=("o thr",))
    emitted = [state.advance() for _ in range(3)]
    # " two" ends with "o", which may start the stop string: held back, not emitted.
    assert [s.text for s in emitted] == ["one", " tw", ""]
    assert emitted[-1].finish_reason == "stop"


def test_held_back_text_is_released_when_no_stop_follows() -> None:
    state = _state(tokenize("one two four"), stops=("o thr",))
    steps = [state.advance() for _ in range(3)]
    assert [s.text for s in steps] == ["one", " tw", "o four"]
    assert steps[-1].finish_reason == "stop"


def test_stop_matcher_picks_the_earliest_of_several_stops() -> None:
    matcher = StopMatcher(("END", "xy"))
    assert matcher.feed("abc x") == ("abc ", False)
    assert matcher.feed("yEND") == ("", True)


def test_echo_source_is_the_text_intact() -> None:
    text = "Repeat  after me:\n  1, 2, 3 "
    state = _state(sequence_source(echo_text=text, seed=0, profile=SimProfile()))
    assert _run(state) == (text, "stop")


def test_fault_after_tokens() -> None:
    state = SequenceState(generated_tokens(1, 20), max_tokens=None, stops=(), fault_after_tokens=3)
    steps = [state.advance() for _ in range(4)]
    assert [s.fault for s in steps] == [False, False, False, True]
    assert state.generated == 3


def test_profile_rejects_inverted_output_range() -> None:
    with pytest.raises(ValueError, match="output_tokens_min"):
        SimProfile(output_tokens_min=10, output_tokens_max=5)


def test_subword_pieces_join_back_and_respect_the_size() -> None:
    tokens = ["Hello", ", jane.doe@example.com", " ünïcode 🚀"]
    pieces = subword_pieces(tokens, 3, seed=11)
    assert "".join(pieces) == "".join(tokens)
    assert all(1 <= len(piece) <= 3 for piece in pieces)
    assert len(pieces) > len(tokens)
    assert subword_pieces(tokens, 3, seed=11) == pieces
