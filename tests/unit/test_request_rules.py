"""The OpenAI request rules the gateway and the engines share (frugal.openai_request), and
that both services refuse a request that breaks one with the same message."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from engine_workers.errors import InvalidRequestError
from engine_workers.prompt import (
    ChatTurn,
    SamplingParams,
    chat_messages,
    completion_text,
    validate_sampling,
)
from frugal.openai_request import (
    MAX_STOP_STRINGS,
    ROLES,
    OpenAIRequestError,
    chat_texts,
    check_n,
    content_text,
    output_token_limit,
    parse_stop,
    prompt_text,
)
from safety_filter.errors import ApiError
from safety_filter.extproc.openai_request import parse_inference_request

MODEL = "m"


def refusal(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(OpenAIRequestError) as caught:
        call(*args)
    return str(caught.value)


def test_every_openai_role_is_known() -> None:
    assert {"system", "developer", "user", "assistant", "tool"} == ROLES
    assert refusal(chat_texts, [("wizard", "hi")]) == "messages.0.role: unknown role 'wizard'"


def test_content_is_a_string_or_text_parts() -> None:
    assert content_text(None, "c") == ""
    assert (
        content_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "c") == "a\nb"
    )
    assert refusal(content_text, [{"type": "image_url"}], "c").startswith("c.0.type:")
    assert refusal(content_text, ["a"], "c").startswith("c.0:")
    assert refusal(content_text, [{"type": "text", "text": 1}], "c").startswith("c.0.text:")
    assert refusal(content_text, 7, "c").startswith("c:")


def test_messages_must_not_be_empty() -> None:
    assert chat_texts([("user", "hi")]) == (("user", "hi"),)
    assert refusal(chat_texts, []) == "messages: must not be empty"


def test_stop_is_a_string_or_a_few_strings() -> None:
    assert parse_stop(None) == parse_stop("") == parse_stop([]) == ()
    assert parse_stop(["a", "", "b"]) == ("a", "b")
    too_many = ["s"] * (MAX_STOP_STRINGS + 1)
    assert refusal(parse_stop, too_many) == f"stop: at most {MAX_STOP_STRINGS} strings"
    assert refusal(parse_stop, [1, 2]).startswith("stop: must be a string")


def test_one_choice_and_a_positive_token_limit() -> None:
    check_n(None)
    check_n(1)
    assert refusal(check_n, 2) == "n: only n=1 is supported"
    assert output_token_limit(None, None) is None
    assert output_token_limit(9, 4) == 4
    assert output_token_limit(9, None) == 9
    limit = "must be an integer from 1 to 4294967295"
    assert refusal(output_token_limit, 0, None) == f"max_tokens: {limit}"
    assert refusal(output_token_limit, 5, 0) == f"max_completion_tokens: {limit}"
    assert refusal(output_token_limit, 2**32, None) == f"max_tokens: {limit}"
    assert refusal(check_n, 0) == f"n: {limit}"


def test_a_prompt_is_a_string_or_one_string_in_a_list() -> None:
    assert prompt_text("x") == prompt_text(["x"]) == "x"
    for bad in (["a", "b"], [], [1], None):
        assert refusal(prompt_text, bad).startswith("prompt:")


def _gateway_says(body: dict[str, object], path: str) -> str:
    with pytest.raises(ApiError) as caught:
        parse_inference_request(path, json.dumps({"model": MODEL, **body}).encode())
    return caught.value.message


def _engine_says_of_chat(body: dict[str, object]) -> str:
    messages = body.get("messages", [{"role": "user", "content": "hi"}])
    assert isinstance(messages, list)
    with pytest.raises(InvalidRequestError) as caught:
        fields = {k: v for k, v in body.items() if k != "messages"}
        validate_sampling(SamplingParams(model=MODEL, **fields), MODEL)  # type: ignore[arg-type]
        chat_messages([ChatTurn(m["role"], m.get("content")) for m in messages])
    return caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"n": 2},
        {"max_tokens": 0},
        {"max_completion_tokens": 0},
        {"n": 0},
        {"stop": ["a", "b", "c", "d", "e"]},
        {"stop": [1]},
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "hi"}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ],
)
def test_the_gateway_and_the_engine_refuse_a_chat_request_alike(body: dict[str, object]) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], **body}
    assert _gateway_says(chat, "/v1/chat/completions") == _engine_says_of_chat(chat)


@pytest.mark.parametrize("prompt", [["a", "b"], [], 7])
def test_the_gateway_and_the_engine_refuse_a_prompt_alike(prompt: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        completion_text(prompt)
    assert _gateway_says({"prompt": prompt}, "/v1/completions") == caught.value.message
