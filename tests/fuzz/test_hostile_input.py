"""Hand-made hostile requests through the real Envoy: each gets the right status, OpenAI's
error shape and a message naming the field or the problem (or is served, when it is
harmless). The cases marked "was" were answered wrongly before issue 12."""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx
import pytest

from tests.fuzz.answers import assert_stream_finished, openai_error
from tests.fuzz.conftest import MAX_REQUEST_BYTES, MODEL, Gateway
from tests.helpers.stack import STACK_MARKS

pytestmark = STACK_MARKS

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MESSAGES = '"messages": [{"role": "user", "content": "hello there"}]'
TOKENS_RANGE = "must be an integer from 1 to 4294967295"


def chat(extra: str) -> bytes:
    return f'{{"model": "{MODEL}", {MESSAGES}, {extra}}}'.encode()


def messages(value: str) -> bytes:
    return f'{{"model": "{MODEL}", "messages": {value}}}'.encode()


OBJECT = '{"a": '


def nested(opening: str, depth: int) -> str:
    closing = {"[": "]", OBJECT: "}"}[opening]
    return opening * depth + ("1" if opening != "[" else "") + closing * depth


@dataclass(frozen=True)
class Refusal:
    body: bytes
    status: int
    says: str  # the message contains this
    path: str = CHAT


REFUSED = {
    "malformed JSON": Refusal(b'{"model": "sim-echo", ', 400, "could not parse the JSON"),
    "empty body": Refusal(b"", 400, "no body"),
    "a JSON array": Refusal(b"[1, 2]", 400, "must be a JSON object"),
    "null": Refusal(b"null", 400, "must be a JSON object"),
    "max_tokens as text": Refusal(chat('"max_tokens": "9"'), 400, f"max_tokens: {TOKENS_RANGE}"),
    "max_tokens 1e300": Refusal(chat('"max_tokens": 1e300'), 400, f"max_tokens: {TOKENS_RANGE}"),
    "max_tokens -1": Refusal(chat('"max_tokens": -1'), 400, f"max_tokens: {TOKENS_RANGE}"),
    # was a 503 "The usage store is unavailable" (a key without a tpm limit: Redis' HINCRBY
    # refused the reservation), or the transcoder's "invalid value ... TYPE_UINT32"
    "max_tokens 2**62": Refusal(chat(f'"max_tokens": {2**62}'), 400, f"max_tokens: {TOKENS_RANGE}"),
    "max_tokens 2**64": Refusal(chat(f'"max_tokens": {2**64}'), 400, f"max_tokens: {TOKENS_RANGE}"),
    "max_tokens 2**32": Refusal(chat(f'"max_tokens": {2**32}'), 400, f"max_tokens: {TOKENS_RANGE}"),
    "max_completion_tokens 2**40": Refusal(
        chat(f'"max_completion_tokens": {2**40}'), 400, "max_completion_tokens: must be"
    ),
    "temperature NaN": Refusal(chat('"temperature": NaN'), 400, "could not parse the JSON"),
    "temperature Infinity": Refusal(chat('"temperature": Infinity'), 400, "could not parse"),
    "temperature 'NaN'": Refusal(chat('"temperature": "NaN"'), 400, "temperature: must be"),
    "temperature 1e400": Refusal(chat('"temperature": 1e400'), 400, "infinity"),
    "top_p 1.5": Refusal(chat('"top_p": 1.5'), 400, "top_p: must be a number from 0 to 1"),
    "n huge": Refusal(chat(f'"n": {10**30}'), 400, f"n: {TOKENS_RANGE}"),
    "n 2": Refusal(chat('"n": 2'), 400, "n: only n=1 is supported"),
    # was the transcoder's "seed: invalid value 9223372036854775808 for type TYPE_INT64"
    "seed past int64": Refusal(chat(f'"seed": {2**63}'), 400, "seed: must be an integer"),
    # was a 503 with an empty message (orjson writes at most 254 levels when the
    # processor rewrites a body), or the transcoder's "Message too deep"
    "600 nested arrays": Refusal(chat(f'"x": {nested("[", 600)}'), 400, "more than 64 levels"),
    "100 nested arrays": Refusal(chat(f'"x": {nested("[", 100)}'), 400, "more than 64 levels"),
    "10,000 nested arrays": Refusal(chat(f'"x": {nested("[", 10_000)}'), 400, "depth"),
    "10,000 nested objects": Refusal(chat(f'"x": {nested(OBJECT, 10_000)}'), 400, "depth"),
    "nested content": Refusal(messages(f'[{{"role": "user", "content": {nested("[", 80)}}}]'),
                              400, "more than 64 levels"),
    "invalid UTF-8 body": Refusal(b'\xff\xfe{"model": 1}', 400, "could not parse the JSON"),
    "invalid UTF-8 in a string": Refusal(
        b'{"model": "sim-echo", "messages": [{"role": "user", "content": "\xc3\x28"}]}',
        400,
        "could not parse the JSON",
    ),
    "a lone surrogate": Refusal(messages('[{"role": "user", "content": "\\ud800"}]'), 400,
                                "could not parse the JSON"),
    # was the transcoder's ": Proto fields must have a name."
    "an empty field name": Refusal(chat('"": 1'), 400, "body: a field name must not be empty"),
    "content a number": Refusal(messages('[{"role": "user", "content": 5}]'), 400,
                                "messages.0.content: must be a string or a list"),
    "content an object": Refusal(messages('[{"role": "user", "content": {"a": 1}}]'), 400,
                                 "messages.0.content"),
    "an image part": Refusal(
        messages('[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]'),
        400, "messages.0.content.0.type: only 'text'"),
    "a part without text": Refusal(messages('[{"role": "user", "content": [{"type": "text"}]}]'),
                                   400, "messages.0.content.0.text: must be a string"),
    "no role": Refusal(messages('[{"content": "x"}]'), 400, "messages.0.role"),
    "an unknown role": Refusal(messages('[{"role": "wizard", "content": "x"}]'), 400,
                               "messages.0.role: unknown role 'wizard'"),
    "a message that is a string": Refusal(messages('["hello"]'), 400, "messages.0"),
    "messages null": Refusal(messages("null"), 400, "messages"),
    "no messages": Refusal(messages("[]"), 400, "messages: must not be empty"),
    "an unknown model": Refusal(b'{"model": "nope", ' + MESSAGES.encode() + b"}", 404, "nope"),
    "a prompt of two": Refusal(b'{"model": "sim-echo", "prompt": ["a", "b"]}', 400, "prompt",
                               COMPLETIONS),
    "a prompt of tokens": Refusal(b'{"model": "sim-echo", "prompt": [[1, 2]]}', 400, "prompt",
                                  COMPLETIONS),
    "stream with a bad field": Refusal(chat('"stream": true, "top_p": 9'), 400, "top_p"),
    "stream_options without stream": Refusal(chat('"stream_options": {"include_usage": true}'),
                                             400, "stream_options"),
    "over the body cap": Refusal(chat(f'"x": "{"a" * MAX_REQUEST_BYTES}"'), 413,
                                 f"limit of {MAX_REQUEST_BYTES} bytes"),
}  # fmt: skip


def post(gateway: Gateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    sent = {"content-type": "application/json", **gateway.auth, **headers}
    return httpx.post(gateway.url + path, content=body, headers=sent, timeout=60)


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_hostile_input_is_refused_naming_the_problem(gateway: Gateway, case: Refusal) -> None:
    response = post(gateway, case.path, case.body)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = openai_error(response)
    assert case.says in error["message"], error["message"]


SERVED = {
    "unknown fields": chat('"tools": [{"type": "function"}], "logit_bias": {"1": 2}, "x": {}'),
    "5,000 unknown fields": chat(", ".join(f'"f{i}": {i}' for i in range(5000))),
    "a 500 KB unknown field": chat(f'"x": "{"a" * 500_000}"'),
    "64 nested levels": chat(f'"x": {nested("[", 63)}'),
    "content null": messages('[{"role": "user", "content": null}]'),
    "content as text parts": messages(
        '[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", '
        '"text": "b", "cache_control": {"type": "ephemeral"}}]}]'
    ),
    "a tool conversation": messages(
        '[{"role": "user", "content": "call it"}, {"role": "assistant", "content": null, '
        '"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", '
        '"arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "42"}]'
    ),
    "every role": messages(
        json.dumps([{"role": r, "content": "x"} for r in ("system", "developer", "user")])
    ),
    "4.0 as max_tokens": chat('"max_tokens": 4.0'),
    "the largest max_tokens": chat(f'"max_tokens": {2**32 - 1}'),
    "the smallest seed": chat(f'"seed": {-(2**63)}'),
    "an empty name inside a content part": messages(
        '[{"role": "user", "content": [{"type": "text", "text": "a", "": 1}]}]'
    ),
}


@pytest.mark.parametrize("body", SERVED.values(), ids=SERVED.keys())
def test_odd_but_valid_requests_are_served(gateway: Gateway, body: bytes) -> None:
    response = post(gateway, CHAT, body)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_a_200_kb_prompt_under_the_cap_is_answered(gateway: Gateway) -> None:
    prompt = "lorem ipsum dolor sit amet " * (200_000 // 27)
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 8, "stream": True}
    response = post(gateway, COMPLETIONS, json.dumps(body).encode())
    assert response.status_code == 200, response.text
    assert_stream_finished(response.text)
    assert response.text.rstrip().endswith("data: [DONE]")


def test_a_body_not_labelled_json_is_still_read_as_json(gateway: Gateway) -> None:
    # The API takes JSON only; the content-type is not what decides (as OpenAI's SDKs
    # always send application/json, and curl -d sends form-urlencoded).
    body = chat('"max_tokens": 2')
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = post(gateway, CHAT, body, **{"content-type": content_type})
        assert response.status_code == 200, response.text


def test_camel_case_field_names_are_unknown_fields(gateway: Gateway) -> None:
    # Protobuf's JSON parser took "maxTokens" as max_tokens and "outputChecks" as
    # output_checks: limits unseen by the safety filter, output checks chosen by the client.
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "zebra crossing ahead"}],
        "maxTokens": 1,
        "outputChecks": {"detectors": ["BLOCKLIST"], "action": "block", "blocklist": ["zebra"]},
    }
    response = post(gateway, CHAT, json.dumps(body).encode())
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "zebra crossing ahead"
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("method", "path"), [("GET", CHAT), ("PUT", COMPLETIONS), ("DELETE", CHAT)]
)
def test_another_method_than_post_is_405(gateway: Gateway, method: str, path: str) -> None:
    # was a 400 "The request has no body" (GET) or a 404 "Could not resolve ... to a method"
    response = httpx.request(method, gateway.url + path, headers=gateway.auth, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert f"{path} takes POST" in openai_error(response)["message"]
