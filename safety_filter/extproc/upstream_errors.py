"""Engine errors of a started stream, named as a client got them.

Pure layer. A gRPC error status becomes an HTTP status (as the transcoder maps it)
and an OpenAI error type and code (frugal.openai_errors). A stream that failed after
it started already ended with the worker's own error event; this names its reason
for the metrics and the access log. (The body of an error answer is rewritten to
OpenAI's shape by Envoy: control_plane/translate/engine_errors.py.)
"""

from __future__ import annotations

from urllib.parse import unquote

from safety_filter.errors import ApiError, upstream_error

# gRPC status code -> HTTP status, as Envoy's transcoder maps them (grpc/status.cc).
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip


def error_from_grpc_status(status: str, message: str) -> ApiError:
    """An error from the `grpc-status` / `grpc-message` trailers of a failed stream."""
    http = GRPC_TO_HTTP.get(int(status), 500) if status.isdigit() else 500
    return upstream_error(http, unquote(message) or "The engine failed while generating.")
