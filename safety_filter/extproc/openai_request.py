"""Parsing and validating an OpenAI request body, once, before it reaches an engine.

Pure layer. Field rules follow OpenAI's API reference; a refusal names the field.
Only what the gateway needs comes back (model, stream); the body itself goes on
unchanged to Envoy's transcoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from safety_filter.errors import ApiError, invalid_request

Probability = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Stop = str | Annotated[list[str], Field(max_length=4)] | None


class _Lenient(BaseModel):
    # Unknown fields (tools, response_format, logit_bias...) are accepted and
    # ignored, as by most OpenAI-compatible servers; the engine never sees them.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    model: str = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Probability | None = None
    n: int | None = None
    stop: Stop = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("temperature", "top_p", "presence_penalty", "frequency_penalty", mode="before")
    @classmethod
    def _int_is_a_number(cls, value: Any) -> Any:
        # Strict mode refuses 1 for a float field; JSON has one number type.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]


@dataclass(frozen=True)
class InferenceRequest:
    """What the gateway needs to know of a valid request."""

    model: str
    stream: bool
    include_usage: bool
    # The most it may generate (max_completion_tokens, else max_tokens); None: not said.
    max_output_tokens: int | None
    # The parsed body, for checks that rewrite it (prompt redaction).
    body: dict[str, Any]


SCHEMAS: dict[str, type[_Sampling]] = {
    "/v1/chat/completions": ChatRequest,
    "/v1/completions": CompletionRequest,
}


def parse_inference_request(path: str, body: bytes) -> InferenceRequest:
    """`path` is one of SCHEMAS (without `:stream`); raises ApiError for bad input."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request: {exc}", "invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.", "invalid_json")
    try:
        request = SCHEMAS[path].model_validate(data)
    except ValidationError as exc:
        raise _describe(exc) from exc
    if request.stream_options is not None and not request.stream:
        raise invalid_request("stream_options: only allowed when 'stream' is true", "invalid_value")
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    max_output = getattr(request, "max_completion_tokens", None) or request.max_tokens
    return InferenceRequest(request.model, bool(request.stream), include_usage, max_output, data)


# Fields that take "a string or a list": pydantic reports each branch of the union
# separately (`stop.str: ...`), which names no real field; say what is allowed instead.
UNION_FIELDS: dict[str, str] = {
    "stop": "must be a string or a list of at most 4 strings",
    "prompt": "must be a string or a list of exactly one string",
    "content": "must be a string or a list of text parts ({'type': 'text', 'text': ...})",
}


def _describe(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
    path: list[str] = []
    for part in first["loc"]:
        path.append(str(part))
        if part in UNION_FIELDS and first["type"] != "missing":
            return invalid_request(f"{'.'.join(path)}: {UNION_FIELDS[str(part)]}", code)
    return invalid_request(f"{'.'.join(path) or 'body'}: {first['msg']}", code)
