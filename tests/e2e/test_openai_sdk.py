"""The official openai SDK, sync and async, through the real Envoy to the sim engines."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.helpers.stack import FrugalStack

ECHO_TEXT = "Hello, Frugal!  Streams   keep   spacing,\n newlines and ünïcode 🚀 intact."


def _client(stack: FrugalStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key=stack.api_key, max_retries=0)


def _async_client(stack: FrugalStack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=stack.api_key, max_retries=0)


def _echo_messages(text: str = ECHO_TEXT) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": "You repeat."},
        {"role": "user", "content": text},
    ]


def test_chat_completion_returns_echo_intact(stack: FrugalStack) -> None:
    response = _client(stack).chat.completions.create(model="sim-echo", messages=_echo_messages())
    assert response.object == "chat.completion"
    assert response.model == "sim-echo"
    assert response.id.startswith("chatcmpl-")
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ECHO_TEXT
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_chat_stream_arrives_intact_and_in_order(stack: FrugalStack) -> None:
    stream = _client(stack).chat.completions.create(
        model="sim-echo", messages=_echo_messages(), stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ECHO_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_include_usage_puts_usage_in_last_chunk(stack: FrugalStack) -> None:
    stream = _client(stack).chat.completions.create(
        model="sim-echo",
        messages=_echo_messages("one two three four five"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_sequence_ends_the_text_before_it(stack: FrugalStack) -> None:
    response = _client(stack).chat.completions.create(
        model="sim-echo", messages=_echo_messages("one two three four"), stop=["three"]
    )
    assert response.choices[0].message.content == "one two "
    assert response.choices[0].finish_reason == "stop"


def test_completion_honours_max_tokens(stack: FrugalStack) -> None:
    response = _client(stack).completions.create(
        model="sim-mixtral", prompt="Once upon a time", max_tokens=5, seed=7
    )
    assert response.object == "text_completion"
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 5
    again = _client(stack).completions.create(
        model="sim-mixtral", prompt="Once upon a time", max_tokens=5, seed=7
    )
    assert again.choices[0].text == response.choices[0].text


def test_completion_stream(stack: FrugalStack) -> None:
    stream = _client(stack).completions.create(
        model="sim-echo", prompt="stream me back please", stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "stream me back please"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_client_chat_and_completion(stack: FrugalStack) -> None:
    client = _async_client(stack)
    response = await client.chat.completions.create(model="sim-echo", messages=_echo_messages())
    assert response.choices[0].message.content == ECHO_TEXT
    stream = await client.chat.completions.create(
        model="sim-echo", messages=_echo_messages(), stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == ECHO_TEXT
    completion = await client.completions.create(model="sim-mixtral", prompt="hi", max_tokens=3)
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    await client.close()


def test_content_as_a_list_of_text_parts(stack: FrugalStack) -> None:
    response = _client(stack).chat.completions.create(
        model="sim-echo",
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
    )
    assert response.choices[0].message.content == "parts work"


def test_models_list_and_retrieve(stack: FrugalStack) -> None:
    client = _client(stack)
    ids = {model.id for model in client.models.list()}
    assert ids == {m.name for m in stack.config.models}
    assert {"sim-echo", "sim-mixtral"} <= ids
    assert client.models.retrieve("sim-echo").id == "sim-echo"


def test_unknown_model_raises_not_found(stack: FrugalStack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _client(stack).chat.completions.create(model="gpt-nope", messages=_echo_messages())
    assert caught.value.code == "model_not_found"


def test_n_above_one_is_a_bad_request(stack: FrugalStack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(stack).chat.completions.create(model="sim-echo", messages=_echo_messages(), n=2)
    assert "n" in caught.value.message


def test_engine_failure_mid_stream_raises_in_the_sdk(stack: FrugalStack) -> None:
    stream = _client(stack).chat.completions.create(
        model="sim-faulty", messages=_echo_messages(), stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "the stream should fail after some tokens, not before"
