"""`local_reply_config`: every error Envoy itself answers becomes an OpenAI error body.

Pure layer. Envoy makes local replies for transcoder parse errors (400), unknown
paths (404), oversized bodies (413), upstream failures (503/504) and for the
immediate responses of the safety filter. The safety filter sends a plain-text
message plus the error's type and code as dynamic metadata; the first mapper
turns those into `{"error": {"message", "type", "code"}}`. The other
mappers cover replies Envoy makes on its own, by status.
See envoy/api: config/filter/network/http_connection_manager LocalReplyConfig.
"""

from __future__ import annotations

from typing import Any

# Imported for json_format.ParseDict of the `@type` below (messages.py says why).
import envoy.extensions.access_loggers.filters.cel.v3.cel_pb2  # noqa: F401

from control_plane.translate.edge_limits import UNPARSED_REQUEST_HEADER
from control_plane.translate.messages import TYPE
from frugal import wire

# status -> (OpenAI error type, code) for replies Envoy makes without the safety filter.
ENVOY_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("timeout_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "headers_too_large"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("timeout_error", "upstream_timeout"),
}


CHECKS_UNAVAILABLE = (
    "The gateway's request checks (the safety filter) did not answer, so the request was"
    " not served. Please retry."
)
CEL_FILTER = TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
# What Envoy answers a request it could not parse with (its codecs and HCM).
CODEC_ERRORS = (400, 408, 413, 431)
OVERLOADED_MESSAGE = "The gateway is overloaded (its memory is near its limit); retry later."


def _error_body(error_type: str, code: str) -> dict[str, Any]:
    return {
        "json_format": {
            "error": {"message": "%LOCAL_REPLY_BODY%", "type": error_type, "code": code}
        },
        "content_type": "application/json",
    }


def _status_filter(status: int, op: str = "EQ") -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {"op": op, "value": {"default_value": status, "runtime_key": "_"}}
        }
    }


def build_local_reply_config() -> dict[str, Any]:
    # The safety filter sends an error's type and code as dynamic metadata with its
    # immediate response (local reply mappers read metadata, and their header filters
    # see only request headers).
    from_safety_filter = {
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": wire.ERROR_METADATA_NAMESPACE,
                    "path": [{"key": wire.ERROR_CODE_KEY}],
                    "value": {"present_match": True},
                },
                # Envoy's default is to match when the key is absent.
                "match_if_key_not_found": False,
            }
        },
        "body_format_override": _error_body(
            f"%DYNAMIC_METADATA({wire.ERROR_METADATA_NAMESPACE}:{wire.ERROR_TYPE_KEY})%",
            f"%DYNAMIC_METADATA({wire.ERROR_METADATA_NAMESPACE}:{wire.ERROR_CODE_KEY})%",
        ),
    }
    # The overload manager's stop_accepting_requests (bootstrap): Envoy's own body is
    # "envoy overloaded"; the client learns it may retry. Known by its response code
    # details: its OM flag is not set yet when the reply is mapped (verified on 1.40).
    overloaded = {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": CEL_FILTER,
                    "expression": "response.code_details == 'overload'",
                },
            }
        },
        "body": {"inline_string": OVERLOADED_MESSAGE},
        "body_format_override": _error_body("server_error", "overloaded"),
    }
    # A codec error's reply (malformed HTTP, headers past the codec's limits, headers not
    # in by request_headers_timeout): there are no request headers. It is marked so that
    # the request processor skips it (edge_limits.py says why).
    unparsed = [
        {
            "filter": {
                "and_filter": {
                    "filters": [
                        {"header_filter": {"header": {"name": ":method", "present_match": False}}},
                        _status_filter(status),
                    ]
                }
            },
            "headers_to_add": [
                {
                    "header": {"key": UNPARSED_REQUEST_HEADER, "value": "true"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
            "body_format_override": _error_body(*ENVOY_ERRORS[status]),
        }
        for status in CODEC_ERRORS
    ]
    by_status = [
        {"filter": _status_filter(status), "body_format_override": _error_body(kind, code)}
        for status, (kind, code) in ENVOY_ERRORS.items()
    ]
    # A safety filter that cannot be reached (ext_proc's gRPC error: status_on_error) or
    # does not answer within message_timeout (a frozen process: 504) replies with code
    # details `ext_proc_error_...` (envoy: source/extensions/filters/http/ext_proc) and
    # an empty body. Both mean that nothing was checked and nothing reached an engine: one
    # 503 that says so (a killed and a frozen safety filter measured in
    # tests/e2e/test_fail_closed.py). Envoy's other 503s and 504s (no healthy upstream,
    # upstream timeout, max stream duration ...) keep the body that says what failed.
    checks_unanswered = {
        "filter": {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": CEL_FILTER,
                    "expression": "response.code_details.startsWith('ext_proc_error')",
                },
            }
        },
        "status_code": 503,
        "body": {"inline_string": CHECKS_UNAVAILABLE},
        "body_format_override": _error_body(*ENVOY_ERRORS[503]),
    }
    any_other_error = {
        "filter": _status_filter(400, "GE"),
        "body_format_override": _error_body("server_error", "internal_error"),
    }
    # No top-level body_format: successful local replies (direct responses such as
    # /v1/models) keep their own body.
    return {
        "mappers": [
            from_safety_filter,
            *unparsed,
            overloaded,
            checks_unanswered,
            *by_status,
            any_other_error,
        ]
    }
