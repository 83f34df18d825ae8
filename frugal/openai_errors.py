"""OpenAI's error shape, shared by the services that write errors to clients.

Pure layer. The safety filter answers refusals and rewrites engine errors in this
shape; the engine workers write it as the error event that ends a failed stream.
Both name an engine error by the HTTP status it stands for, through one table.
"""

from __future__ import annotations

import json

# HTTP status of an upstream (engine) error -> OpenAI error type and code.
UPSTREAM_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    499: ("invalid_request_error", "cancelled"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "upstream_timeout"),
}
ENGINE_ERROR = ("server_error", "engine_error")

# The error event of a stream that a content policy stopped.
CONTENT_POLICY_VIOLATION = ("invalid_request_error", "content_policy_violation")


def upstream_kind(status: int) -> tuple[str, str]:
    """(type, code) of an engine error with this HTTP status."""
    return UPSTREAM_ERRORS.get(status, ENGINE_ERROR)


def error_json(message: str, kind: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return json.dumps(body).encode()


def error_event(message: str, kind: str, code: str) -> bytes:
    """The Server-Sent Event that ends a failed stream (`data: {"error": ...}`)."""
    return b"data: " + error_json(message, kind, code) + b"\n\n"


def output_blocked_message(category: str) -> str:
    return f"The response was stopped by the content policy: it contained {category}."
