"""Engine errors, as a client gets them: the transcoder's bodies rewritten to OpenAI's shape.

Pure layer. A gRPC error status becomes an HTTP status (as the transcoder maps it)
and an OpenAI error type and code (frugal.openai_errors). A stream that failed after
it started already ended with the worker's own error event; this names its reason.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from frugal import openai_errors
from safety_filter.errors import ApiError, upstream_error

# gRPC status code -> HTTP status, as Envoy's transcoder maps them (grpc/status.cc).
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip


def error_json(error: ApiError) -> bytes:
    return openai_errors.error_json(error.message, error.type, error.code)


def error_from_grpc_status(status: str, message: str) -> ApiError:
    """An error from the `grpc-status` / `grpc-message` trailers of a failed stream."""
    http = GRPC_TO_HTTP.get(int(status), 500) if status.isdigit() else 500
    return upstream_error(http, unquote(message) or "The engine failed while generating.")


def openai_error_body(status: int, body: bytes) -> bytes:
    """The body of a failed response, in OpenAI's shape.

    Envoy's own local replies already are (local_reply_config); the transcoder
    turns a gRPC status into `{"code", "message"}`, which is rewritten here.
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = {"message": body.decode(errors="replace")}
    if not isinstance(data, dict):
        data = {}
    if isinstance(data.get("error"), dict):
        return body
    message = str(data.get("message") or f"The engine answered with status {status}.")
    return error_json(upstream_error(status, message))
