"""Checking generated text on its way out: unary answers here, streams in the worker.

Pure layer. A unary answer is checked as a whole (`check_whole_body`). A stream is
checked where its tokens are made: `output_checks` states the request's checks for
the engine worker, which runs them token by token before it writes each event
(engine_workers/output_guard.py), so no stream passes through this process a chunk
at a time.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from frugal.content_checks import ContentPolicy, Match, redact, scan


def output_checks(policy: ContentPolicy) -> dict[str, Any] | None:
    """A stream's checks, as the `output_checks` of the request the engine gets
    (frugal.v1.OutputChecks); None when the policy checks nothing."""
    if not policy.detectors:
        return None
    return {
        "detectors": list(policy.detectors),
        "action": policy.output_action,
        "blocklist": list(policy.blocklist),
    }


def _text_slot(event: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The dict and key that hold this event's generated text (chat delta or completion)."""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return delta, "content"
    if "text" in choice:
        return choice, "text"
    message = choice.get("message")
    if isinstance(message, dict):
        return message, "content"
    return None


def usage_of(body: dict[str, Any]) -> tuple[int, int] | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


class WholeBody(NamedTuple):
    body: bytes  # to send
    usage: tuple[int, int] | None  # (prompt, completion) tokens, if the body reports them
    matches: list[Match]  # what was found in its text


def check_whole_body(raw: bytes, policy: ContentPolicy) -> WholeBody:
    """A unary answer, checked as a whole.

    `redact` rewrites the text; `block` withholds it and sets finish_reason to
    "content_filter", as OpenAI does when its own filters stop an answer (the
    status line is already out, so this cannot become an error response).
    """
    try:
        data = json.loads(raw)
    except ValueError:
        return WholeBody(raw, None, [])
    if not isinstance(data, dict):
        return WholeBody(raw, None, [])
    usage = usage_of(data)
    slot = _text_slot(data)
    text = slot[0].get(slot[1]) if slot is not None else None
    if slot is None or not isinstance(text, str) or not text:
        return WholeBody(raw, usage, [])
    holder, key = slot
    matches = scan(text, policy)
    if not matches:
        return WholeBody(raw, usage, [])
    if policy.output_action == "block":
        holder[key] = ""
        data["choices"][0]["finish_reason"] = "content_filter"
    else:
        holder[key] = redact(text, matches)
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return WholeBody(body, usage, matches)
