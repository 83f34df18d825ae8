"""Server-Sent Events the safety filter adds to a stream, and error bodies it rewrites.

Pure layer. The transcoder frames each gRPC message as `data: {...}\n\n` but
never ends a stream with `data: [DONE]`, and an HTTP/1.1 client never sees the
gRPC status trailer; these helpers give the end of every stream an explicit
meaning (ENVOY_NOTES, grpc_json_transcoder). A stream's end also carries the
engine's own time as an SSE comment, which SSE clients skip (WHATWG HTML,
"event stream interpretation": a line starting with a colon is ignored).
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from safety_filter.checks import Match
from safety_filter.errors import ApiError, upstream_error

DONE_EVENT = b"data: [DONE]\n\n"
ENGINE_MS_COMMENT = b": x-frugal-engine-ms="
# Where generated text sits in an answer's JSON: chat deltas and messages, completion
# choices.
TEXT_FIELDS = (b'"content":', b'"text":')

# gRPC status code -> HTTP status, as Envoy's transcoder maps them (grpc/status.cc).
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip


def error_json(error: ApiError) -> bytes:
    body = {"error": {"message": error.message, "type": error.type, "code": error.code}}
    return json.dumps(body).encode()


def error_event(error: ApiError) -> bytes:
    return b"data: " + error_json(error) + b"\n\n"


def engine_time_comment(engine_ms: float) -> bytes:
    return ENGINE_MS_COMMENT + f"{engine_ms:.3f}".encode() + b"\n\n"


def carries_text(chunk: bytes) -> bool:
    """Whether a chunk of a response body holds generated text (a non-empty text field).

    A field cut in two by a chunk boundary is missed, and found in a later chunk.
    """
    for field in TEXT_FIELDS:
        at = chunk.find(field)
        while at >= 0:
            end = at + len(field)
            value = chunk[end : end + 8].lstrip()  # the transcoder prints no space; json.dumps one
            if value[:1] == b'"' and value[1:2] not in (b'"', b""):
                return True
            at = chunk.find(field, end)
    return False


def output_blocked(match: Match) -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "content_policy_violation",
        f"The response was stopped by the content policy: it contained {match.category}.",
    )


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
