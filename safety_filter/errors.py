"""Errors the safety filter answers with, in OpenAI's shape.

Pure layer. Every refusal is an `ApiError` carrying its HTTP status and OpenAI
error type and code; the ext_proc processor turns it into an immediate response
in one place, and Envoy's local_reply_config wraps the message into
`{"error": {"message", "type", "code"}}` (control_plane/translate/local_replies.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal.openai_errors import upstream_kind


# Not frozen: an exception's __traceback__ is set as it propagates (a frozen dataclass
# refuses that when an async context manager re-raises it).
@dataclass
class ApiError(Exception):
    status: int
    type: str
    code: str
    message: str
    # Extra response headers, e.g. OpenAI's x-ratelimit-* on a 429.
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.message


def invalid_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, "invalid_request_error", code, message)


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"{path} takes POST with a JSON body, not {method}.",
        (("allow", "POST"),),
    )


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        "invalid_request_error",
        "model_not_found",
        f"The model `{model}` does not exist or you do not have access to it.",
    )


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "invalid_request_error",
        "request_too_large",
        f"The request body is larger than the limit of {limit} bytes.",
    )


def model_not_allowed(model: str) -> ApiError:
    return ApiError(
        403,
        "permission_error",
        "model_not_allowed",
        f"This API key may not use the model `{model}`.",
    )


def invalid_api_key() -> ApiError:
    return ApiError(
        401,
        "authentication_error",
        "invalid_api_key",
        "Incorrect API key provided. Send a valid Frugal API key as "
        "`Authorization: Bearer <key>`; ask your administrator for one.",
        (("www-authenticate", "Bearer"),),
    )


def auth_unavailable() -> ApiError:
    return ApiError(
        503,
        "server_error",
        "service_unavailable",
        "The authentication service is temporarily unavailable. Please retry.",
        (("retry-after", "1"),),
    )


def usage_store_unavailable() -> ApiError:
    return ApiError(
        503,
        "server_error",
        "service_unavailable",
        "The usage store is unavailable. Please retry.",
        (("retry-after", "1"),),
    )


def overloaded(retry_after_s: int) -> ApiError:
    """Shed before admission: the gateway is at its stated bound of requests being admitted."""
    return ApiError(
        503,
        "server_error",
        "overloaded",
        "The gateway is overloaded; the request was not admitted. Please retry.",
        (("retry-after", str(retry_after_s)),),
    )


RATE_REFUSAL_CODE = "requests_per_minute_exceeded"


def requests_exhausted(message: str, headers: tuple[tuple[str, str], ...]) -> ApiError:
    return ApiError(429, "rate_limit_error", RATE_REFUSAL_CODE, message, headers)


def tokens_exhausted(
    limit: int, remaining: int, reset_s: float, headers: tuple[tuple[str, str], ...] = ()
) -> ApiError:
    return ApiError(
        429,
        "rate_limit_error",
        "tokens_per_minute_exceeded",
        f"Rate limit reached for tokens per minute: limit {limit}, remaining {remaining}; "
        f"try again in {reset_s:.0f}s or ask for fewer max_tokens.",
        headers,
    )


def upstream_error(status: int, message: str) -> ApiError:
    kind, code = upstream_kind(status)
    return ApiError(status, kind, code, message)
