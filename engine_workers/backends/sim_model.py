"""The maths of the `sim` engine (backend layer, pure: no asyncio, no I/O).

A continuous-batching engine modelled as in docs/simulator.md: every step serves each
running sequence one token plus the prefill of the sequences admitted in that step, and takes

    t_step = a + b * n_running + c * prefill_tokens_this_step

Profiles `tp8` and `tp2` are calibrated on the ScaleLLM paper (arXiv 2408.00008, Table 1).
Output text is deterministic given the request seed; stop strings and max_tokens are honoured
the way OpenAI-compatible engines do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine_workers.tokenizer import tokenize


class SimProfile(BaseModel):
    """Latency and capacity parameters of one simulated replica."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a_ms: float = Field(default=8.4, ge=0)
    b_ms: float = Field(default=0.13, ge=0)
    c_ms: float = Field(default=0.03, ge=0)
    max_batch: int = Field(default=128, ge=1)
    kv_budget_tokens: int = Field(default=262_144, ge=1)
    # Every simulated duration is multiplied by this (docs/simulator.md, "Fitting a 2-core
    # machine").
    time_scale: float = Field(default=1.0, gt=0)
    # Each step's time is multiplied by a factor drawn uniformly from [1 - jitter, 1 + jitter].
    jitter: float = Field(default=0.05, ge=0, lt=1)
    seed: int = 0
    output_tokens_min: int = Field(default=64, ge=1)
    output_tokens_max: int = Field(default=256, ge=1)
    # Test hook: every request fails with INTERNAL after this many generated tokens.
    fault_after_tokens: int | None = Field(default=None, ge=0)
    # Real tokenizers cut words into sub-word pieces; > 0 cuts every token into pieces of
    # 1..subword_max_chars characters (seeded), so output checks meet text split anywhere.
    subword_max_chars: int = Field(default=0, ge=0, le=64)
    # Prefix cache (engine_workers.backends.prefix_cache): blocks of this many prompt tokens
    # stay cached in the KV budget, least recently used out first, and a prompt's leading
    # cached blocks skip their prefill. 0: no prefix cache. Mooncake's traces use 512.
    prefix_block_tokens: int = Field(default=0, ge=0)
    # Decode steps of one sequence the engine runs when it starts, before it serves, as real
    # engines warm up (vLLM's profiling run, CUDA-graph capture): in its decode-step tally,
    # so the adaptive balancer knows the replica's step time before any traffic reaches it.
    warmup_steps: int = Field(default=4, ge=0)

    @property
    def prefix_cache_blocks(self) -> int:
        """The blocks the KV budget holds (0 without a prefix cache)."""
        if self.prefix_block_tokens == 0:
            return 0
        return self.kv_budget_tokens // self.prefix_block_tokens

    @model_validator(mode="after")
    def _check_output_range(self) -> SimProfile:
        if self.output_tokens_min > self.output_tokens_max:
            raise ValueError("output_tokens_min must not exceed output_tokens_max")
        return self


# a and b from the table in docs/simulator.md. c (prefill per prompt token): Table 1 gives
# TTFT 25.0 ms vs TBT 8.5 ms at c=1 for the TP2 replica, i.e. ~16.5 ms of prefill for the
# benchmark's prompts (assumed ~550 tokens) -> 0.03 ms/token; TP8 has 4x the GPUs, so
# ~0.0125 ms/token assuming prefill (compute bound) scales near-linearly with tensor
# parallelism.
# KV budgets: Mixtral 8x7B holds 32 layers x 8 KV heads x 128 dims x 2 (K, V) x 2 bytes
# = 128 KiB per token; ~32 GiB free per TP2 replica -> ~256k tokens, ~4x that for TP8.
PROFILES: dict[str, SimProfile] = {
    "tp8": SimProfile(a_ms=5.0, b_ms=0.10, c_ms=0.0125, max_batch=256, kv_budget_tokens=1_048_576),
    "tp2": SimProfile(a_ms=8.4, b_ms=0.13, c_ms=0.03, max_batch=128, kv_budget_tokens=262_144),
}


def named_profile(name: str) -> SimProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown sim profile {name!r}; known: {sorted(PROFILES)}") from None


def step_ms(profile: SimProfile, n_running: int, prefill_tokens: int) -> float:
    """Simulated duration of one engine step, in unscaled milliseconds, without jitter."""
    return profile.a_ms + profile.b_ms * n_running + profile.c_ms * prefill_tokens


def warmup_step_ms(profile: SimProfile) -> float:
    """The duration of one warm-up step (one sequence, no prefill), unscaled, no jitter."""
    return step_ms(profile, 1, 0)


def step_seconds(
    profile: SimProfile, n_running: int, prefill_tokens: int, rng: random.Random
) -> float:
    """Wall-clock duration of one step: the step model, jittered, times time_scale."""
    factor = 1.0 + rng.uniform(-profile.jitter, profile.jitter) if profile.jitter else 1.0
    return step_ms(profile, n_running, prefill_tokens) * factor * profile.time_scale / 1000.0


_WORDS = (
    "the a of to and in that is for it as with was on be by at this from or an which but not "
    "are have one all were when we there can been has more if will no out so what up about "
    "into than them only other new some could time these two may then first any like now "
    "model token batch engine stream request latency replica cache prefill decode gateway "
    "frugal serving queue budget signal"
).split()


def generated_tokens(seed: int, count: int) -> list[str]:
    """`count` tokens of deterministic pseudo-text; a longer count extends a shorter one."""
    rng = random.Random(seed)
    tokens: list[str] = []
    sentence_left = 0
    for i in range(count):
        if sentence_left == 0:
            sentence_left = rng.randint(5, 14)
            word = rng.choice(_WORDS).capitalize()
        else:
            word = rng.choice(_WORDS)
        sentence_left -= 1
        if sentence_left == 0:
            word += "."
        tokens.append(word if i == 0 else " " + word)
    return tokens


def natural_length(seed: int, profile: SimProfile) -> int:
    """How many tokens the sequence would produce before its end-of-sequence token."""
    rng = random.Random(seed ^ 0x5EED)
    return rng.randint(profile.output_tokens_min, profile.output_tokens_max)


class StopMatcher:
    """Incremental stop-string matching over streamed text.

    Text that could be the start of a stop string is held back until it is known not to be;
    on a match, only the text before the stop string is released.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add generated text; return (text safe to emit, whether a stop string matched)."""
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Release the held-back text when the sequence ends without a stop match."""
        held, self._held = self._held, ""
        return held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:k]):
                    longest = k
                    break
        return longest


@dataclass(frozen=True, slots=True)
class TokenStep:
    """What one engine step produced for one sequence."""

    text: str
    finish_reason: str | None = None
    fault: bool = False


class SequenceState:
    """The decoding state of one sequence: which token comes next and when it stops."""

    def __init__(
        self,
        source: list[str],
        *,
        max_tokens: int | None,
        stops: tuple[str, ...],
        fault_after_tokens: int | None,
    ) -> None:
        self._source = source
        self._max_tokens = max_tokens
        self._matcher = StopMatcher(stops)
        self._fault_after = fault_after_tokens
        self.generated = 0

    @property
    def planned_tokens(self) -> int:
        """The most tokens this sequence can produce (for KV reservation)."""
        if self._max_tokens is None:
            return len(self._source)
        return min(len(self._source), self._max_tokens)

    def advance(self) -> TokenStep:
        """Run one decode step: produce the next token, or the end of the sequence."""
        if self._fault_after is not None and self.generated >= self._fault_after:
            return TokenStep("", fault=True)
        if not self._source:
            # Nothing to say (e.g. echoing empty text): end at once, no token generated.
            return TokenStep("", finish_reason="stop")
        token = self._source[self.generated]
        self.generated += 1
        text, stopped = self._matcher.feed(token)
        if stopped:
            return TokenStep(text, finish_reason="stop")
        if self.generated >= len(self._source):
            return TokenStep(text + self._matcher.flush(), finish_reason="stop")
        if self._max_tokens is not None and self.generated >= self._max_tokens:
            return TokenStep(text + self._matcher.flush(), finish_reason="length")
        return TokenStep(text)


def sequence_source(*, echo_text: str | None, seed: int, profile: SimProfile) -> list[str]:
    """The tokens a sequence will decode: the echoed text, or seeded pseudo-text."""
    if echo_text is not None:
        tokens = tokenize(echo_text)
    else:
        tokens = generated_tokens(seed, natural_length(seed, profile))
    if profile.subword_max_chars:
        return subword_pieces(tokens, profile.subword_max_chars, seed)
    return tokens


def subword_pieces(tokens: list[str], max_chars: int, seed: int) -> list[str]:
    """Each token cut into pieces of 1..max_chars characters; joining them gives the text back."""
    rng = random.Random(seed)
    pieces = []
    for token in tokens:
        start = 0
        while start < len(token):
            end = start + rng.randint(1, max_chars)
            pieces.append(token[start:end])
            start = end
    return pieces
