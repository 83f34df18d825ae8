"""Validation and flattening of OpenAI-style requests to prompt text (core layer, pure).

Inputs are plain Python values (the servicer turns google.protobuf.Value into them). The
field rules are the shared ones the safety filter applies too (frugal.openai_request); this
module adds what only an engine knows (the model it serves) and raises the engine's errors.
Chat messages are validated into `ChatMessage`s; each backend renders them with its model's
chat template (`EngineBackend.render_prompt`). `role_tagged_text` is the simple template of
backends without one of their own (the simulator).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from engine_workers.engine import ChatMessage, PromptInput, RenderedPrompt
from engine_workers.errors import InvalidRequestError, ModelNotFoundError
from engine_workers.tokenizer import count_tokens
from frugal.openai_request import (
    OpenAIRequestError,
    chat_texts,
    check_n,
    output_token_limit,
    parse_stop,
    prompt_text,
)


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: object  # a string, a list of content parts, or None


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """The request fields chat and completion share, as sent (None when absent)."""

    model: str
    n: int | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: object = None
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class ValidatedSampling:
    max_tokens: int | None
    stop: tuple[str, ...]
    seed: int | None
    temperature: float | None
    top_p: float | None


@contextmanager
def _invalid_request() -> Iterator[None]:
    """The one place the shared rules' error becomes the engine's."""
    try:
        yield
    except OpenAIRequestError as exc:
        raise InvalidRequestError(str(exc)) from exc


def validate_sampling(params: SamplingParams, served_model: str) -> ValidatedSampling:
    if params.model != served_model:
        raise ModelNotFoundError(f"model {params.model!r} is not served here")
    with _invalid_request():
        check_n(params.n)
        max_tokens = output_token_limit(params.max_tokens, params.max_completion_tokens)
        stop = parse_stop(params.stop)
    return ValidatedSampling(
        max_tokens=max_tokens,
        stop=stop,
        seed=params.seed,
        temperature=params.temperature,
        top_p=params.top_p,
    )


def chat_messages(turns: Sequence[ChatTurn]) -> tuple[ChatMessage, ...]:
    with _invalid_request():
        texts = chat_texts((turn.role, turn.content) for turn in turns)
    return tuple(ChatMessage(role, text) for role, text in texts)


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """What echo mode streams back: the last user message."""
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def role_tagged_text(messages: Sequence[ChatMessage]) -> str:
    """Chat messages as one prompt text, for engines without a chat template of their own."""
    pieces = [f"<|{m.role}|>\n{m.content}\n" for m in messages]
    return "".join(pieces) + "<|assistant|>\n"


def render_role_tagged(prompt: PromptInput) -> RenderedPrompt:
    """A prompt rendered with `role_tagged_text`, counted in whitespace tokens."""
    text = role_tagged_text(prompt.messages) if prompt.messages is not None else prompt.text or ""
    return RenderedPrompt(text=text, token_count=count_tokens(text))


def completion_text(prompt: object) -> str:
    with _invalid_request():
        return prompt_text(prompt)
