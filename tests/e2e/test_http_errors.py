"""Bad input over raw HTTP: the right status and OpenAI's error shape for every case."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from frugal import wire
from tests.helpers.stack import FrugalStack


def _assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert "code" in error
    if code is not None:
        assert error["code"] == code
    return dict(error)


def _post(stack: FrugalStack, path: str, body: bytes | str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    headers = {"content-type": "application/json", **stack.auth}
    return httpx.post(stack.base_url + path, content=content, headers=headers)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_malformed_json_is_400(stack: FrugalStack, path: str) -> None:
    error = _assert_openai_error(_post(stack, path, '{"model": "sim-echo", '), 400, "invalid_json")
    assert error["type"] == "invalid_request_error"


def test_body_that_is_not_an_object_is_400(stack: FrugalStack) -> None:
    _assert_openai_error(_post(stack, "/v1/chat/completions", "[1, 2]"), 400, "invalid_json")


def test_missing_messages_names_the_field(stack: FrugalStack) -> None:
    response = _post(stack, "/v1/chat/completions", json.dumps({"model": "sim-echo"}))
    error = _assert_openai_error(response, 400, "missing_required_parameter")
    assert "messages" in error["message"]


def test_wrong_type_names_the_field(stack: FrugalStack) -> None:
    body = {"model": "sim-echo", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}
    error = _assert_openai_error(_post(stack, "/v1/chat/completions", json.dumps(body)), 400)
    assert "max_tokens" in error["message"]


def test_unknown_model_is_404_model_not_found(stack: FrugalStack) -> None:
    body = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
    error = _assert_openai_error(
        _post(stack, "/v1/chat/completions", json.dumps(body)), 404, "model_not_found"
    )
    assert "nope" in error["message"]


def test_unknown_path_is_404(stack: FrugalStack) -> None:
    _assert_openai_error(_post(stack, "/v1/embeddings", "{}"), 404)
    _assert_openai_error(httpx.get(stack.base_url + "/nothing/here", headers=stack.auth), 404)


def test_n_2_is_400(stack: FrugalStack) -> None:
    body = {"model": "sim-echo", "messages": [{"role": "user", "content": "x"}], "n": 2}
    error = _assert_openai_error(_post(stack, "/v1/chat/completions", json.dumps(body)), 400)
    assert "n" in error["message"]


def test_oversized_body_is_413(stack: FrugalStack) -> None:
    big = "x " * (stack.config.listener.max_request_bytes // 2 + 10)
    body = {"model": "sim-echo", "messages": [{"role": "user", "content": big}]}
    _assert_openai_error(_post(stack, "/v1/chat/completions", json.dumps(body)), 413)


def test_stream_ends_with_done(stack: FrugalStack) -> None:
    body = {"model": "sim-echo", "messages": [{"role": "user", "content": "a b c"}], "stream": True}
    response = _post(stack, "/v1/chat/completions", json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    # Data events, and one SSE comment with the engine's time just before the end.
    assert events[-2].startswith(wire.ENGINE_MS_COMMENT)
    assert all(e.startswith("data: ") for e in events[:-2])


def test_engine_failure_mid_stream_ends_with_an_error_event(stack: FrugalStack) -> None:
    body = {"model": "sim-faulty", "messages": [{"role": "user", "content": "x"}], "stream": True}
    response = _post(stack, "/v1/chat/completions", json.dumps(body))
    events = [e for e in response.text.split("\n\n") if e]
    last = json.loads(events[-1].removeprefix("data: "))
    assert set(last["error"]) >= {"message", "type", "code"}
    assert "data: [DONE]" not in events


def test_engine_failure_unary_is_an_openai_error(stack: FrugalStack) -> None:
    body = {"model": "sim-faulty", "messages": [{"role": "user", "content": "x"}]}
    _assert_openai_error(_post(stack, "/v1/chat/completions", json.dumps(body)), 500)


def test_grpc_headers_do_not_leak(stack: FrugalStack) -> None:
    body = {"model": "sim-echo", "messages": [{"role": "user", "content": "x"}]}
    response = _post(stack, "/v1/chat/completions", json.dumps(body))
    assert response.status_code == 200
    assert "grpc-status" not in response.headers
