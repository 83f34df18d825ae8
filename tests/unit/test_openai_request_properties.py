"""Property tests (hypothesis) for the safety filter's body parser: nothing a client sends
makes it raise anything but its own refusal, and a valid request comes back as sent."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from frugal.openai_request import ROLES, UINT32_MAX
from safety_filter.errors import ApiError
from safety_filter.extproc.openai_request import SCHEMAS, parse_inference_request
from safety_filter.extproc.prompt_check import prompt_characters

PATHS = st.sampled_from(sorted(SCHEMAS))
KEYS = st.sampled_from(
    ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
     "top_p", "n", "stop", "seed", "stream", "stream_options", "include_usage", "role",
     "content", "type", "text", "name", "user", "", "x"]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
# JSON values shaped like requests: the field names the parser reads, any values below.
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(KEYS | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=40,
)


def _parse(path: str, body: bytes) -> None:
    try:
        request = parse_inference_request(path, body)
    except ApiError as error:
        assert error.status == 400 and error.message, error
        return
    # What the parser accepts the processor can write again (a redacted prompt, a capped
    # max_tokens): orjson writes fewer levels than it reads (a 600-level body was a 503).
    assert orjson.loads(orjson.dumps(request.body)) == request.body
    prompt_characters(request.body)


@settings(max_examples=400, deadline=None)
@given(PATHS, JSON_VALUES)
def test_any_json_value_is_parsed_or_refused_with_a_400(path: str, value: Any) -> None:
    _parse(path, json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(PATHS, st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_with_a_400(path: str, body: bytes) -> None:
    _parse(path, body)


@settings(max_examples=200, deadline=None)
@given(PATHS, st.integers(min_value=1, max_value=2_000))
def test_any_depth_is_parsed_or_refused_with_a_400(path: str, depth: int) -> None:
    _parse(path, b'{"model": "m", "x": ' + b"[" * depth + b"]" * depth + b"}")


TEXT = st.text(max_size=30)
PART = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(sorted(ROLES))},
    optional={"content": st.none() | TEXT | st.lists(PART, max_size=3), "name": TEXT},
)
SAMPLING = {
    "max_tokens": st.integers(min_value=1, max_value=UINT32_MAX),
    "temperature": st.floats(min_value=0, max_value=2),
    "top_p": st.floats(min_value=0, max_value=1),
    "seed": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "stop": st.none() | TEXT | st.lists(TEXT, max_size=4),
    "stream": st.booleans(),
    "user": TEXT,
}
CHAT = st.fixed_dictionaries(
    {"model": st.text(min_size=1, max_size=10), "messages": st.lists(MESSAGE, min_size=1)},
    optional=SAMPLING,
)


@settings(max_examples=300, deadline=None)
@given(CHAT)
def test_a_valid_chat_request_round_trips(body: dict[str, Any]) -> None:
    request = parse_inference_request("/v1/chat/completions", json.dumps(body).encode())
    assert request.body == body
    assert (request.model, request.stream) == (body["model"], body.get("stream", False))
    assert request.max_output_tokens == body.get("max_tokens")
