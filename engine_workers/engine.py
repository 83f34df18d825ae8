"""The engine backend protocol and its value types (core layer, pure: no gRPC, no I/O).

A backend is a continuous-batching engine: it renders a validated prompt into what it will
run (`render_prompt`: its own chat template and tokenizer), admits `GenerationRequest`s,
streams `Delta`s for each, and reports its load. Backends are registered by name in
`engine_workers.backends`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One validated chat message; content parts are already joined into text."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class PromptInput:
    """What the client asked for, validated: chat messages, or a completion prompt."""

    messages: tuple[ChatMessage, ...] | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """A prompt as one backend runs it: the text, its token count, and the token ids where
    the backend tokenizes itself (so the prompt is tokenized once)."""

    text: str
    token_count: int
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate, validated and rendered by the backend that runs it."""

    request_id: str
    prompt: str
    prompt_tokens: int
    prompt_token_ids: tuple[int, ...] | None = None
    # The chat messages as sent, for backends that forward them (an upstream server).
    messages: tuple[ChatMessage, ...] | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # Set only in echo mode: the text the engine streams back instead of generating.
    echo_text: str | None = None
    # Told the sequence's count of generated tokens at each step that makes one, before
    # the step's delta is handed over: a caller that stops taking deltas (its client
    # left) still knows every token made for it. Backends that count no further than
    # their deltas never call it.
    on_generated: Callable[[int], None] | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Delta:
    """New output text of one sequence; the last one has finish_reason and usage set."""

    text: str
    finish_reason: str | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class DecodeSteps:
    """An engine's own tally of its decode steps (steps that prefilled nothing), since it
    started: how many, their total duration, and the sequences they ran summed over them.
    Between two tallies, mean step time and mean batch follow exactly, with no prefill
    mixed in: what the adaptive balancer fits its step-time line to."""

    steps: int = 0
    seconds: float = 0.0
    sequences: int = 0

    def add(self, seconds: float, sequences: int) -> DecodeSteps:
        return DecodeSteps(self.steps + 1, self.seconds + seconds, self.sequences + sequences)


@dataclass(frozen=True, slots=True)
class PrefillSteps:
    """An engine's own tally of its prefill steps (steps that prefilled a prompt), since it
    started: how many, their total duration, the sequences they ran and the prompt tokens
    they prefilled, summed over them. Less the decode line, what is left of their time per
    token is what the adaptive balancer weighs a burst of prompts by."""

    steps: int = 0
    seconds: float = 0.0
    sequences: int = 0
    tokens: int = 0

    def add(self, seconds: float, sequences: int, tokens: int) -> PrefillSteps:
        return PrefillSteps(
            self.steps + 1, self.seconds + seconds, self.sequences + sequences, self.tokens + tokens
        )


@dataclass(frozen=True, slots=True)
class PrefixCacheTally:
    """Prompt tokens looked up in an engine's prefix cache, and those found, since start
    (vLLM's `prefix_cache_queries` / `prefix_cache_hits`)."""

    queried_tokens: int
    hit_tokens: int


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """What the model-server protocol of the Gateway API Inference Extension asks for,
    and the decode-step, prefill-step and prefix-cache tallies of a backend that keeps
    them (None: it does not)."""

    running: int
    waiting: int
    kv_cache_usage: float  # fraction of the KV budget in use, 0..1
    tokens_generated_total: int
    decode_steps: DecodeSteps | None = None
    prefix_cache: PrefixCacheTally | None = None  # None: no prefix cache
    prefill_steps: PrefillSteps | None = None


class EngineBackend(Protocol):
    """A continuous-batching engine behind one worker."""

    async def start(self) -> None: ...

    def render_prompt(self, prompt: PromptInput) -> RenderedPrompt:
        """The prompt as this engine runs it (chat template applied, tokens counted)."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Stream the sequence's output; closing the iterator early aborts the sequence."""
        ...

    def abort(self, request_id: str) -> None:
        """Remove the sequence from the batch or the queue at once; unknown ids are ignored."""
        ...

    def load(self) -> LoadSnapshot: ...

    async def stop(self) -> None: ...
