"""Validation and flattening of OpenAI-style requests to prompt text (core layer, pure).

Inputs are plain Python values (the servicer turns google.protobuf.Value into them). Chat
messages are validated into `ChatMessage`s; each backend renders them with its model's chat
template (`EngineBackend.render_prompt`). `role_tagged_text` is the simple template of
backends without one of their own (the simulator).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine_workers.engine import ChatMessage, PromptInput, RenderedPrompt
from engine_workers.errors import InvalidRequestError, ModelNotFoundError
from engine_workers.tokenizer import count_tokens

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
MAX_STOP_STRINGS = 4


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


def validate_sampling(params: SamplingParams, served_model: str) -> ValidatedSampling:
    if params.model != served_model:
        raise ModelNotFoundError(f"model {params.model!r} is not served here")
    if params.n is not None and params.n != 1:
        raise InvalidRequestError("n: only n=1 is supported")
    # OpenAI deprecated max_tokens for chat in favour of max_completion_tokens.
    max_tokens = (
        params.max_completion_tokens
        if params.max_completion_tokens is not None
        else params.max_tokens
    )
    if max_tokens is not None and max_tokens < 1:
        raise InvalidRequestError("max_tokens: must be at least 1")
    return ValidatedSampling(
        max_tokens=max_tokens,
        stop=parse_stop(params.stop),
        seed=params.seed,
        temperature=params.temperature,
        top_p=params.top_p,
    )


def parse_stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > MAX_STOP_STRINGS:
            raise InvalidRequestError(f"stop: at most {MAX_STOP_STRINGS} strings")
        return tuple(s for s in value if s)
    raise InvalidRequestError("stop: must be a string or a list of strings")


def content_text(content: object, where: str) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_part_text(part, f"{where}[{i}]") for i, part in enumerate(content))
    raise InvalidRequestError(f"{where}: must be a string or a list of content parts")


def _part_text(part: object, where: str) -> str:
    if not isinstance(part, dict):
        raise InvalidRequestError(f"{where}: a content part must be an object")
    if part.get("type") != "text":
        raise InvalidRequestError(f"{where}.type: only 'text' content parts are supported")
    text = part.get("text")
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where}.text: must be a string")
    return text


def chat_messages(turns: Sequence[ChatTurn]) -> tuple[ChatMessage, ...]:
    if not turns:
        raise InvalidRequestError("messages: must not be empty")
    messages = []
    for i, turn in enumerate(turns):
        if turn.role not in ROLES:
            raise InvalidRequestError(f"messages[{i}].role: unknown role {turn.role!r}")
        messages.append(
            ChatMessage(turn.role, content_text(turn.content, f"messages[{i}].content"))
        )
    return tuple(messages)


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
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequestError("prompt: a list must hold exactly one string")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError("prompt: must be a string or a list of one string")
    return prompt
