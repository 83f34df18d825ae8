"""check_prompt and prompt_characters on chat and completion bodies (already validated JSON)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from frugal.content_checks import DEFAULT_POLICY, ContentPolicy
from safety_filter.extproc.prompt_check import check_prompt, policy_violation, prompt_characters

EMAIL = "jane.doe@example.com"
SSN = "536-22-1234"
BLOCKING = DEFAULT_POLICY.model_copy(update={"prompt_action": "block"})
LOGGING = DEFAULT_POLICY.model_copy(update={"prompt_action": "log"})
NOTHING = ContentPolicy()  # no detectors


def chat(*contents: Any) -> dict[str, Any]:
    roles = ["system", "user", "assistant", "user"]
    return {
        "model": "sim-echo",
        "messages": [
            {"role": roles[i % len(roles)], "content": content}
            for i, content in enumerate(contents)
        ],
    }


def parts(*texts: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": text} for text in texts]


def test_string_contents_are_redacted_in_place() -> None:
    body = chat("Be brief.", f"Write to {EMAIL}", "ok", f"and {EMAIL} again")
    verdict = check_prompt(body, DEFAULT_POLICY)
    assert verdict.redacted is True
    assert [m.category for m in verdict.matches] == ["EMAIL", "EMAIL"]
    assert [m["content"] for m in body["messages"]] == [
        "Be brief.",
        "Write to [REDACTED:EMAIL]",
        "ok",
        "and [REDACTED:EMAIL] again",
    ]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]


def test_text_parts_are_redacted_in_place() -> None:
    body = chat(parts("hello", f"mail {EMAIL}, Grüße 🚀"))
    verdict = check_prompt(body, DEFAULT_POLICY)
    assert verdict.redacted is True
    assert body["messages"][0]["content"] == parts("hello", "mail [REDACTED:EMAIL], Grüße 🚀")


def test_a_completion_prompt_string_is_redacted() -> None:
    body = {"model": "sim-echo", "prompt": f"SSN {SSN} and {EMAIL}"}
    verdict = check_prompt(body, DEFAULT_POLICY)
    assert verdict.redacted is True
    assert sorted(m.category for m in verdict.matches) == ["EMAIL", "US_SSN"]
    assert body["prompt"] == "SSN [REDACTED:US_SSN] and [REDACTED:EMAIL]"


def test_a_completion_prompt_list_is_redacted() -> None:
    body = {"model": "sim-echo", "prompt": [f"to {EMAIL}"]}
    assert check_prompt(body, DEFAULT_POLICY).redacted is True
    assert body["prompt"] == ["to [REDACTED:EMAIL]"]


@pytest.mark.parametrize(
    "body",
    [
        chat("Hello there", parts("no secrets here")),
        chat(None, ""),
        chat(parts()),
        {"model": "sim-echo", "prompt": "plain words"},
        {"model": "sim-echo", "prompt": ["plain words"]},
        {"model": "sim-echo"},
    ],
)
def test_a_clean_prompt_is_left_alone(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    verdict = check_prompt(body, DEFAULT_POLICY)
    assert (verdict.matches, verdict.redacted) == ([], False)
    assert body == before


@pytest.mark.parametrize(
    "body",
    [
        chat("Be brief.", f"Write to {EMAIL}"),
        chat(parts("hi", f"mail {EMAIL}")),
        {"model": "sim-echo", "prompt": f"to {EMAIL}"},
        {"model": "sim-echo", "prompt": [f"to {EMAIL}"]},
    ],
)
def test_block_refuses_naming_the_category_not_the_text(body: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    verdict = check_prompt(body, BLOCKING)
    assert verdict.blocked is not None
    error = policy_violation(verdict.blocked)
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "content_policy_violation",
    )
    assert "EMAIL" in error.message
    assert EMAIL not in error.message and "jane" not in error.message
    assert error.headers == ()
    assert body == before


def test_block_names_the_first_category_found() -> None:
    verdict = check_prompt(chat(f"SSN {SSN}", f"mail {EMAIL}"), BLOCKING)
    assert verdict.blocked is not None
    message = policy_violation(verdict.blocked).message
    assert "US_SSN" in message
    assert SSN not in message
    assert [m.category for m in verdict.matches] == ["US_SSN", "EMAIL"]


def test_log_reports_matches_and_changes_nothing() -> None:
    body = chat(f"Write to {EMAIL}", parts(f"SSN {SSN}"))
    before = copy.deepcopy(body)
    verdict = check_prompt(body, LOGGING)
    assert verdict.redacted is False
    assert [m.category for m in verdict.matches] == ["EMAIL", "US_SSN"]
    assert body == before


def test_a_policy_without_detectors_finds_nothing() -> None:
    body = chat(f"Write to {EMAIL}")
    assert check_prompt(body, NOTHING).matches == []
    assert body["messages"][0]["content"] == f"Write to {EMAIL}"


def test_a_blocklist_term_is_found() -> None:
    policy = ContentPolicy(detectors=("BLOCKLIST",), blocklist=("Project Falcon",))
    body = {"model": "sim-echo", "prompt": "tell me about project falcon"}
    verdict = check_prompt(body, policy)
    assert [m.category for m in verdict.matches] == ["BLOCKLIST"]
    assert body["prompt"] == "tell me about [REDACTED:BLOCKLIST]"


def test_prompt_characters_counts_every_text() -> None:
    assert prompt_characters(chat("abc", parts("de", "fgh"), None, "")) == 8
    assert prompt_characters(chat("Grüße 🚀")) == len("Grüße 🚀") == 7
    assert prompt_characters({"model": "m", "prompt": "abcd"}) == 4
    assert prompt_characters({"model": "m", "prompt": ["abcd"]}) == 4
    assert prompt_characters({"model": "m"}) == 0
