"""OpenAI request rules that the gateway and the engines both apply (shared library, pure).

The safety filter checks a request body before it reaches an engine; an engine worker checks
what it is sent again, since it also serves gRPC clients that no gateway checked. Both apply
the rules below (OpenAI's API reference, and what Frugal supports of it) to plain Python
values, so the two can never disagree. A broken rule raises `OpenAIRequestError`, whose
message starts with the field's path (`messages.0.content.1.type: ...`); each service maps it
once to its own error type.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(get_args(Role))
MAX_STOP_STRINGS = 4
# The proto's integer types (proto/frugal/v1/inference.proto): a value outside them cannot
# travel to an engine at all (Envoy's transcoder refuses it), so it is refused up front.
UINT32_MAX = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class OpenAIRequestError(ValueError):
    """A request field breaks a rule; `field` is its path, dotted as in `messages.0.role`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class NumberRange:
    """The values a number field takes (both ends included); JSON null means absent."""

    low: int | float
    high: int | float
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        return f"must be {kind} from {_number(self.low)} to {_number(self.high)}"

    def check(self, field: str, value: object) -> int | float | None:
        """`value` as the field holds it (a float field takes integers too), or None."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OpenAIRequestError(field, self.describe())
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise OpenAIRequestError(field, self.describe())
        if not self.integer:
            return float(value)
        # JSON has one number type: 4.0 is the integer 4 (as JSON Schema and protobuf's
        # JSON parser, which the transcoder uses, both read it). Beyond 2**53 a float holds
        # no exact integer, and orjson reads an integer written outside 64 bits as one
        # (-9223372036854775809 would round into the int64 range).
        if isinstance(value, float) and not (value.is_integer() and abs(value) <= 2**53):
            raise OpenAIRequestError(field, self.describe())
        return int(value)


def _number(value: int | float) -> str:
    return str(int(value)) if isinstance(value, int) or value.is_integer() else str(value)


# OpenAI's API reference gives the sampling ranges; the integer bounds are the proto's.
NUMBER_RANGES: dict[str, NumberRange] = {
    "max_tokens": NumberRange(1, UINT32_MAX, integer=True),
    "max_completion_tokens": NumberRange(1, UINT32_MAX, integer=True),
    "n": NumberRange(1, UINT32_MAX, integer=True),
    "seed": NumberRange(INT64_MIN, INT64_MAX, integer=True),
    "temperature": NumberRange(0, 2),
    "top_p": NumberRange(0, 1),
    "presence_penalty": NumberRange(-2, 2),
    "frequency_penalty": NumberRange(-2, 2),
}


def check_n(n: int | None) -> None:
    NUMBER_RANGES["n"].check("n", n)
    if n is not None and n != 1:
        raise OpenAIRequestError("n", "only n=1 is supported")


def output_token_limit(max_tokens: int | None, max_completion_tokens: int | None) -> int | None:
    """The most a request may generate; None when it does not say. OpenAI deprecated
    max_tokens for chat in favour of max_completion_tokens, which wins when both are set."""
    for field, value in (
        ("max_tokens", max_tokens),
        ("max_completion_tokens", max_completion_tokens),
    ):
        NUMBER_RANGES[field].check(field, value)
    return max_completion_tokens if max_completion_tokens is not None else max_tokens


def parse_stop(value: object) -> tuple[str, ...]:
    """`stop`: a string or a list of at most MAX_STOP_STRINGS strings; empty ones stop nothing."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > MAX_STOP_STRINGS:
            raise OpenAIRequestError("stop", f"at most {MAX_STOP_STRINGS} strings")
        return tuple(s for s in value if s)
    raise OpenAIRequestError(
        "stop", f"must be a string or a list of at most {MAX_STOP_STRINGS} strings"
    )


def chat_texts(messages: Iterable[tuple[str, object]]) -> tuple[tuple[str, str], ...]:
    """(role, content) pairs as (role, text): the roles checked, the content flattened."""
    texts = tuple(
        (_role(role, f"messages.{i}.role"), content_text(content, f"messages.{i}.content"))
        for i, (role, content) in enumerate(messages)
    )
    if not texts:
        raise OpenAIRequestError("messages", "must not be empty")
    return texts


def _role(role: str, field: str) -> str:
    if role not in ROLES:
        raise OpenAIRequestError(field, f"unknown role {role!r}")
    return role


def content_text(content: object, field: str) -> str:
    """A message's content as text: a string, or a list of text parts joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_part_text(part, f"{field}.{i}") for i, part in enumerate(content))
    raise OpenAIRequestError(field, "must be a string or a list of content parts")


def _part_text(part: object, field: str) -> str:
    if not isinstance(part, dict):
        raise OpenAIRequestError(field, "a content part must be an object")
    if part.get("type") != "text":
        raise OpenAIRequestError(f"{field}.type", "only 'text' content parts are supported")
    text = part.get("text")
    if not isinstance(text, str):
        raise OpenAIRequestError(f"{field}.text", "must be a string")
    return text


def prompt_text(prompt: object) -> str:
    """A completion's `prompt`: a string, or a list of exactly one string."""
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIRequestError("prompt", "must be a string or a list of exactly one string")
    return prompt
