"""Checking a request's prompt text against its content policy, before an engine sees it.

Pure layer. Finds every piece of user-supplied text in a chat or completion body
(message contents as strings or text parts, the prompt), scans it, and decides:
`block` refuses the request (400 content_policy_violation naming the category,
never the match), `redact` rewrites the text in place (`[REDACTED:EMAIL]`), `log`
only reports what it found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from frugal.content_checks import ContentPolicy, Match, redact, scan
from safety_filter.errors import ApiError

TextSlot = tuple[Any, Any]  # (container, key or index) holding one string


def _text_slots(body: dict[str, Any]) -> Iterator[TextSlot]:
    for message in body.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            yield message, "content"
        elif isinstance(content, list):
            yield from ((part, "text") for part in content if isinstance(part, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield body, "prompt"
    elif isinstance(prompt, list):
        yield from ((prompt, index) for index in range(len(prompt)))


def prompt_parts(body: dict[str, Any]) -> Iterator[str]:
    """The prompt's text in order: each message's role and text, or the prompt."""
    for message in body.get("messages") or ():
        if isinstance(message, dict) and isinstance(message.get("role"), str):
            yield message["role"]
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield prompt
    elif isinstance(prompt, list):
        yield from (item for item in prompt if isinstance(item, str))


def prompt_characters(body: dict[str, Any]) -> int:
    return sum(len(c[k]) for c, k in _text_slots(body) if isinstance(c[k], str))


@dataclass
class PromptVerdict:
    matches: list[Match] = field(default_factory=list)
    redacted: bool = False  # the body was rewritten in place
    blocked: Match | None = None  # `block`: the first match; the request must be refused


def policy_violation(match: Match) -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "content_policy_violation",
        f"The request was refused by the content policy: it contains {match.category}.",
    )


def check_prompt(body: dict[str, Any], policy: ContentPolicy) -> PromptVerdict:
    """Scan every prompt text; with `redact`, rewrite `body`'s texts in place."""
    verdict = PromptVerdict()
    for container, key in _text_slots(body):
        text = container[key]
        if not isinstance(text, str) or not text:
            continue
        matches = scan(text, policy)
        if not matches:
            continue
        verdict.matches += matches
        if policy.prompt_action == "block":
            verdict.blocked = verdict.blocked or matches[0]
        if policy.prompt_action == "redact":
            container[key] = redact(text, matches)
            verdict.redacted = True
    return verdict
