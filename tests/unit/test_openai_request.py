"""`parse_inference_request`: OpenAI request bodies accepted, or refused naming the field."""

from __future__ import annotations

import json

import pytest

from safety_filter.errors import ApiError
from safety_filter.extproc.openai_request import (
    MAX_JSON_DEPTH,
    InferenceRequest,
    parse_inference_request,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def chat(**fields: object) -> bytes:
    body: dict[str, object] = {
        "model": "sim-echo",
        "messages": [{"role": "user", "content": "Hello"}],
    }
    body.update(fields)
    return json.dumps(body).encode()


def completion(**fields: object) -> bytes:
    body: dict[str, object] = {"model": "sim-echo", "prompt": "Once upon"}
    body.update(fields)
    return json.dumps(body).encode()


def refused(path: str, body: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_inference_request(path, body)
    error = caught.value
    assert error.status == 400
    assert error.type == "invalid_request_error"
    return error


def test_a_valid_chat_request() -> None:
    assert parse_inference_request(CHAT, chat()) == InferenceRequest(
        model="sim-echo",
        stream=False,
        include_usage=False,
        max_output_tokens=None,
        body=json.loads(chat()),
    )


def test_a_valid_streaming_chat_request_with_usage() -> None:
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=9, seed=1)
    assert parse_inference_request(CHAT, body) == InferenceRequest(
        "sim-echo", True, True, 9, json.loads(body)
    )


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request = parse_inference_request(CHAT, chat(max_tokens=9, max_completion_tokens=4))
    assert request.max_output_tokens == 4


def test_a_valid_completion_request() -> None:
    body = completion(stream=True, max_tokens=5)
    assert parse_inference_request(COMPLETIONS, body) == InferenceRequest(
        "sim-echo", True, False, 5, json.loads(body)
    )


def test_content_as_a_list_of_text_parts() -> None:
    parts = [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]
    body = chat(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]
    )
    assert parse_inference_request(CHAT, body).model == "sim-echo"


def test_an_image_part_is_refused() -> None:
    parts = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    error = refused(CHAT, chat(messages=[{"role": "user", "content": parts}]))
    assert error.message.startswith("messages.0.content")


def test_malformed_json_is_refused() -> None:
    error = refused(CHAT, b'{"model": "sim-echo", ')
    assert error.code == "invalid_json"
    assert "could not parse the JSON body" in error.message


def test_a_body_that_is_not_utf8_is_refused() -> None:
    error = refused(CHAT, b'{"model": "\xff"}')
    assert error.code == "invalid_json"


@pytest.mark.parametrize("body", [b"[]", b'"hello"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_refused(body: bytes) -> None:
    error = refused(CHAT, body)
    assert error.code == "invalid_json"
    assert error.message == "The request body must be a JSON object."


def test_missing_messages_is_named() -> None:
    error = refused(CHAT, json.dumps({"model": "sim-echo"}).encode())
    assert error.code == "missing_required_parameter"
    assert error.message.startswith("messages:")


def test_missing_model_is_named() -> None:
    error = refused(COMPLETIONS, json.dumps({"prompt": "x"}).encode())
    assert error.code == "missing_required_parameter"
    assert error.message.startswith("model:")


def test_empty_messages_are_refused() -> None:
    error = refused(CHAT, chat(messages=[]))
    assert error.code == "invalid_value"
    assert error.message.startswith("messages:")


def test_an_unknown_role_is_named() -> None:
    error = refused(CHAT, chat(messages=[{"role": "wizard", "content": "hi"}]))
    assert error.message.startswith("messages.0.role:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "9"),
        ("max_tokens", 9.5),
        ("temperature", "hot"),
        ("temperature", True),
        ("stream", "yes"),
        ("stream", 1),
        ("seed", "1"),
        ("user", 5),
        ("model", 7),
    ],
)
def test_a_wrong_type_names_the_field(field: str, value: object) -> None:
    error = refused(CHAT, chat(**{field: value}))
    assert error.code == "invalid_value"
    assert error.message.startswith(f"{field}:"), error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 3),
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", 0),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
    ],
)
def test_out_of_range_names_the_field(field: str, value: object) -> None:
    error = refused(CHAT, chat(**{field: value}))
    assert error.code == "invalid_value"
    assert error.message.startswith(f"{field}:"), error.message


def test_n_above_one_is_refused() -> None:
    error = refused(CHAT, chat(n=2))
    assert error.code == "invalid_value"
    assert error.message.startswith("n:")
    assert "only n=1 is supported" in error.message


def test_n_of_one_is_fine() -> None:
    assert parse_inference_request(CHAT, chat(n=1)).model == "sim-echo"


@pytest.mark.parametrize("stop", ["\n", ["a", "b", "c", "d"], [], None])
def test_stop_as_a_string_or_up_to_four_strings(stop: object) -> None:
    assert parse_inference_request(CHAT, chat(stop=stop)).stream is False


def test_five_stop_sequences_are_refused() -> None:
    error = refused(CHAT, chat(stop=["a", "b", "c", "d", "e"]))
    assert error.code == "invalid_value"
    assert error.message.startswith("stop")


def test_five_stop_sequences_are_refused_with_the_real_reason() -> None:
    error = refused(CHAT, chat(stop=["a", "b", "c", "d", "e"]))
    assert error.message.startswith("stop:"), error.message
    assert "4" in error.message, error.message


def test_stream_options_without_stream_are_refused() -> None:
    error = refused(CHAT, chat(stream_options={"include_usage": True}))
    assert error.code == "invalid_value"
    assert error.message.startswith("stream_options:")
    error = refused(CHAT, chat(stream=False, stream_options={"include_usage": True}))
    assert error.message.startswith("stream_options:")


def test_integers_are_accepted_for_number_fields() -> None:
    body = chat(temperature=1, top_p=1, presence_penalty=-2, frequency_penalty=2)
    assert parse_inference_request(CHAT, body).model == "sim-echo"


def test_unknown_fields_are_ignored() -> None:
    body = chat(
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"},
        logit_bias={"1": 2},
    )
    assert parse_inference_request(CHAT, body) == InferenceRequest(
        "sim-echo", False, False, None, json.loads(body)
    )


def test_a_prompt_list_of_one_string_is_fine() -> None:
    assert parse_inference_request(COMPLETIONS, completion(prompt=["Once"])).model == "sim-echo"


def test_a_prompt_list_of_two_strings_is_refused() -> None:
    error = refused(COMPLETIONS, completion(prompt=["Once", "Twice"]))
    assert error.code == "invalid_value"
    assert error.message.startswith("prompt")


def test_a_completion_without_prompt_is_refused() -> None:
    error = refused(COMPLETIONS, json.dumps({"model": "sim-echo"}).encode())
    assert error.code == "missing_required_parameter"
    assert error.message.startswith("prompt:")


def test_a_chat_body_is_not_a_completion() -> None:
    error = refused(COMPLETIONS, chat())
    assert error.message.startswith("prompt:")


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("max_tokens", 2**32, "an integer from 1 to 4294967295"),
        ("max_tokens", 2**62, "an integer from 1 to 4294967295"),
        ("max_tokens", -1, "an integer from 1 to 4294967295"),
        ("max_tokens", 1e300, "an integer from 1 to 4294967295"),
        ("max_completion_tokens", 2**64 - 1, "an integer from 1 to 4294967295"),
        ("n", 10**30, "an integer from 1 to 4294967295"),
        ("seed", 2**63, "an integer from -9223372036854775808 to 9223372036854775807"),
        ("seed", -(2**63) - 1, "an integer from -9223372036854775808 to 9223372036854775807"),
        ("temperature", "NaN", "a number from 0 to 2"),
        ("temperature", 1e39, "a number from 0 to 2"),
        ("top_p", -1e-9, "a number from 0 to 1"),
        ("presence_penalty", False, "a number from -2 to 2"),
    ],
)
def test_a_number_out_of_the_proto_or_openai_range_names_the_field_and_the_range(
    field: str, value: object, rule: str
) -> None:
    error = refused(CHAT, chat(**{field: value}))
    assert error.code == "invalid_value"
    assert error.message == f"{field}: must be {rule}"


def test_the_largest_numbers_the_proto_carries_are_accepted() -> None:
    body = chat(max_tokens=2**32 - 1, seed=-(2**63), temperature=2, top_p=0)
    assert parse_inference_request(CHAT, body).max_output_tokens == 2**32 - 1
    assert parse_inference_request(CHAT, chat(seed=2**63 - 1)).model == "sim-echo"


def _nested(depth: int) -> str:
    """A value `depth` levels of arrays deep."""
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_limit_is_accepted() -> None:
    # The body is level 1, the unknown field's arrays the levels below it.
    body = b'{"model": "sim-echo", "messages": [{"role": "user", "content": "x"}], "x": '
    limit = MAX_JSON_DEPTH
    assert parse_inference_request(CHAT, body + _nested(limit - 1).encode() + b"}")
    error = refused(CHAT, body + _nested(limit).encode() + b"}")
    assert error.code == "json_too_deep"
    assert f"more than {limit} levels" in error.message


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_nesting_far_beyond_any_parser_is_a_400_naming_the_depth(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    deep = opening * 10_000 + ("1" if opening != "[" else "") + closing * 10_000
    error = refused(CHAT, ('{"model": "sim-echo", "x": ' + deep + "}").encode())
    assert "depth" in error.message


def test_an_integer_written_with_a_fraction_point_is_an_integer() -> None:
    # JSON has one number type; JSON Schema and protobuf's JSON parser read 4.0 as 4.
    assert parse_inference_request(CHAT, chat(max_tokens=4.0)).max_output_tokens == 4
    assert refused(CHAT, chat(max_tokens=4.5)).message.startswith("max_tokens: must be an integer")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat(**{"": 1}), "body"),
        (chat(messages=[{"role": "user", "content": "x", "": 1}]), "messages.0"),
        (chat(stream=True, stream_options={"": True}), "stream_options"),
        (completion(**{"": None}), "body"),
    ],
)
def test_an_empty_field_name_in_a_request_object_is_refused(body: bytes, field: str) -> None:
    # The transcoder refuses it there; inside a free-form value (content parts) it is fine.
    path = COMPLETIONS if b"prompt" in body else CHAT
    assert refused(path, body).message == f"{field}: a field name must not be empty"


def test_an_empty_field_name_inside_a_content_part_is_fine() -> None:
    parts = [{"type": "text", "text": "a", "": 1}]
    assert parse_inference_request(CHAT, chat(messages=[{"role": "user", "content": parts}]))
