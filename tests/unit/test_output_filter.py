"""check_whole_body and output_checks: a unary answer checked on its way out, and the
checks a stream's worker runs (engine_workers/output_guard.py; tests/unit/test_answer_events.py).
"""

from __future__ import annotations

import json
from typing import Any

from frugal.content_checks import DEFAULT_POLICY, ContentPolicy
from safety_filter.extproc.output_filter import check_whole_body, output_checks, usage_of

EMAIL = "jane.doe@example.com"
BLOCKING = DEFAULT_POLICY.model_copy(update={"output_action": "block"})


def test_output_checks_state_the_policy_for_the_worker() -> None:
    strict = ContentPolicy(detectors=("EMAIL", "BLOCKLIST"), output_action="block",
                           blocklist=("Project Zeus",))  # fmt: skip
    assert output_checks(strict) == {
        "detectors": ["EMAIL", "BLOCKLIST"], "action": "block", "blocklist": ["Project Zeus"],
    }  # fmt: skip
    assert output_checks(ContentPolicy(detectors=())) is None


# --- whole bodies -----------------------------------------------------------------------------


def chat_completion(content: Any, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        **extra,
    }
    return json.dumps(body).encode()


USAGE = {"usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}


def test_a_unary_chat_answer_is_redacted_and_reports_its_usage() -> None:
    body, usage, _ = check_whole_body(chat_completion(f"Grüße, {EMAIL}!", **USAGE), DEFAULT_POLICY)
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"] == "Grüße, [REDACTED:EMAIL]!"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert usage == (4, 6)
    assert "Grüße".encode() in body  # not \u-escaped


def test_a_unary_completion_answer_is_redacted() -> None:
    raw = json.dumps({"object": "text_completion", "choices": [{"index": 0, "text": EMAIL}]})
    body, usage, _ = check_whole_body(raw.encode(), DEFAULT_POLICY)
    assert json.loads(body)["choices"][0]["text"] == "[REDACTED:EMAIL]"
    assert usage is None


def test_a_unary_answer_under_block_is_withheld() -> None:
    body, usage, _ = check_whole_body(chat_completion(f"mail {EMAIL}", **USAGE), BLOCKING)
    choice = json.loads(body)["choices"][0]
    assert choice["message"]["content"] == ""
    assert choice["finish_reason"] == "content_filter"
    assert usage == (4, 6)


def test_clean_or_textless_bodies_are_returned_as_they_came() -> None:
    for raw in (
        chat_completion("nothing to see", **USAGE),
        chat_completion(None, **USAGE),
        chat_completion(""),
        b'{"id":"c1","object":"chat.completion"}',
        b'{"choices":[]}',
        b"[1, 2]",
        b"not json " + EMAIL.encode(),
        b"",
    ):
        body, _, _ = check_whole_body(raw, DEFAULT_POLICY)
        assert body == raw
    assert check_whole_body(chat_completion(None, **USAGE), DEFAULT_POLICY)[1] == (4, 6)


def test_usage_of() -> None:
    assert usage_of(USAGE) == (4, 6)
    assert usage_of({}) is None
    assert usage_of({"usage": None}) is None
    assert usage_of({"usage": {"prompt_tokens": 4}}) is None
    assert usage_of({"usage": {"prompt_tokens": "4", "completion_tokens": 6}}) is None
    assert usage_of({"usage": {"prompt_tokens": 0, "completion_tokens": 0}}) == (0, 0)
