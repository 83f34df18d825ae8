"""Parsing and validating an OpenAI request body, once, before it reaches an engine.

Pure layer. Field rules follow OpenAI's API reference; a refusal names the field. The
fields' types are checked here (pydantic, strict), their ranges and the rules the engines
apply too (roles, content parts, stop, n, max_tokens, prompt) come from
frugal.openai_request. Whatever passes here must pass Envoy's transcoder too (it parses
the body again into the proto), so a bad request is refused here, with a message that says
what is wrong, and never reaches a later stage that would answer it less clearly (or with
a 5xx: a max_tokens beyond the proto's uint32 once reached the Redis admission script).
Only what the gateway needs comes back (model, stream); the body itself goes on
unchanged to Envoy's transcoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from frugal.openai_request import (
    NUMBER_RANGES,
    OpenAIRequestError,
    chat_texts,
    check_n,
    output_token_limit,
    parse_stop,
    prompt_text,
)
from safety_filter.errors import ApiError, invalid_request

# Envoy's transcoder parses the body again with protobuf's JSON parser, which refuses
# nesting of 100 levels (measured on Envoy 1.40: 99 arrays inside the body passed, 100
# did not), and orjson writes at most 254 (the processor rewrites some bodies). No OpenAI
# request nests more than a few levels (a tool's JSON schema perhaps a dozen).
MAX_JSON_DEPTH = 64


class _Lenient(BaseModel):
    # Unknown fields (tools, response_format, logit_bias...) are accepted and
    # ignored, as by most OpenAI-compatible servers; the engine never sees them.
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _named_fields(cls, data: Any) -> Any:
        # Each of these objects is a proto message to the transcoder, whose JSON parser
        # refuses a field without a name ("Proto fields must have a name.").
        if isinstance(data, dict) and "" in data:
            raise PydanticCustomError("empty_field_name", "a field name must not be empty")
        return data


class Message(_Lenient):
    role: str
    content: Any = None  # frugal.openai_request.content_text's rules
    name: str | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    model: str = Field(min_length=1)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: Any = None  # frugal.openai_request.parse_stop's rules
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None

    # Every number field's type and range, in one rule each (a float field takes an
    # integer: JSON has one number type); check_fields: max_completion_tokens is chat's.
    @field_validator(*NUMBER_RANGES, mode="before", check_fields=False)
    @classmethod
    def _in_range(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        try:
            return NUMBER_RANGES[info.field_name].check(info.field_name, value)
        except OpenAIRequestError as exc:
            raise PydanticCustomError("number_range", exc.reason) from exc

    def check_shared_rules(self) -> int | None:
        """The rules the engines apply too (frugal.openai_request); returns the most the
        request may generate (None: it does not say)."""
        check_n(self.n)
        parse_stop(self.stop)
        return self._check_input()

    def _check_input(self) -> int | None:
        raise NotImplementedError


class ChatRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None

    def _check_input(self) -> int | None:
        chat_texts((message.role, message.content) for message in self.messages)
        return output_token_limit(self.max_tokens, self.max_completion_tokens)


class CompletionRequest(_Sampling):
    prompt: Any  # frugal.openai_request.prompt_text's rules

    def _check_input(self) -> int | None:
        prompt_text(self.prompt)
        return output_token_limit(self.max_tokens, None)


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
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid_request(
            f"We could not parse the JSON body of your request: {exc}", "invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.", "invalid_json")
    if _nested_deeper_than(data, MAX_JSON_DEPTH):
        raise invalid_request(
            f"The request body nests arrays and objects more than {MAX_JSON_DEPTH} levels "
            "deep; no OpenAI request needs that many.",
            "json_too_deep",
        )
    try:
        request = SCHEMAS[path].model_validate(data)
        max_output = request.check_shared_rules()
    except ValidationError as exc:
        raise _describe(exc) from exc
    except OpenAIRequestError as exc:
        raise invalid_request(str(exc), "invalid_value") from exc
    if request.stream_options is not None and not request.stream:
        raise invalid_request("stream_options: only allowed when 'stream' is true", "invalid_value")
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    return InferenceRequest(request.model, bool(request.stream), include_usage, max_output, data)


def _nested_deeper_than(data: dict[str, Any], limit: int) -> bool:
    """Whether `data` has arrays or objects more than `limit` levels deep (itself is 1);
    iterative, so no depth of input can exhaust the stack."""
    pending: list[tuple[Any, int]] = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        pending += ((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _describe(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
    path = ".".join(str(part) for part in first["loc"])
    return invalid_request(f"{path or 'body'}: {first['msg']}", code)
