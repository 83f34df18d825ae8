"""The public listener: edge limits, the safety filter, the JSON<->gRPC transcoder, the router.

Pure layer. Filter order matters (ENVOY_NOTES): ext_proc sits before the
transcoder so it sees the client's JSON on the way in and SSE on the way out.
The HCM's edge settings follow Envoy's edge best practices
(configuration/best_practices/edge); their values come from ListenerConfig, where
each says why. Header sanitising: every client is external (no internal addresses, no trusted
hops), so Envoy's own sanitising (configuration/http/http_conn_man/header_sanitizing)
drops the retry, timeout, trace and address headers a client sends and makes
x-request-id itself; and before the HCM looks at a request (early header mutation)
every x-envoy-* header, x-forwarded-for and grpc-timeout a client sent is removed, so
none is believed whatever Envoy decides is internal (grpc-timeout would reach the engine
through the transcoder as its call's deadline: gRPC's internals are not the client's to
set). Envoy then appends the peer's address to x-forwarded-for: the engine sees only
what Envoy saw (tests/e2e/test_edge_limits.py checks what reaches it). x-frugal-*
headers are the safety filter's to remove (it does, in every configuration).
"""

from __future__ import annotations

import base64
from typing import Any

# Imported for json_format.ParseDict of the `@type`s below (messages.py says why).
import envoy.extensions.filters.network.connection_limit.v3.connection_limit_pb2
import envoy.extensions.http.early_header_mutation.header_mutation.v3.header_mutation_pb2  # noqa: F401

from control_plane.model import FrugalConfig, ListenerConfig
from control_plane.translate import gateway_overhead
from control_plane.translate import messages as m
from control_plane.translate.access_log import build_access_logs
from control_plane.translate.edge_limits import (
    codec_headers_count,
    codec_headers_kb,
    edge_limits_filter,
    skipped_for_unparsed_requests,
)
from control_plane.translate.engine_errors import engine_errors_filter
from control_plane.translate.local_replies import build_local_reply_config
from control_plane.translate.policy_filters import (
    SAFETY_FILTER_CLUSTER,
    local_rate_limit_filter,
    rate_limit_filter,
)
from frugal import wire

PUBLIC_LISTENER = "public"
PUBLIC_ROUTES = "public"
INFERENCE_SERVICE = "frugal.v1.Inference"
ADS: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}
CONNECTION_LIMIT = m.TYPE + "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"
EARLY_HEADER_MUTATION = (
    m.TYPE + "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)


def _ext_proc_filter() -> dict[str, Any]:
    return {
        "name": m.EXT_PROC_FILTER,
        "typed_config": {
            "@type": m.EXT_PROC,
            "grpc_service": {
                "envoy_grpc": {"cluster_name": SAFETY_FILTER_CLUSTER},
                "timeout": "5s",
            },
            # Fail closed: no request reaches an engine unchecked (ARCHITECTURE, failure
            # behaviour); 503 rather than the default 500 so clients retry.
            "failure_mode_allow": False,
            "status_on_error": {"code": "ServiceUnavailable"},
            # Bounds each message's answer: a safety filter that stops answering fails
            # closed within 2 s (504, or 503 at once when its stream is reset). At 1 s, on
            # 2 cores shared with the engines at 256 streams, the processes' queues outgrew
            # it and failed requests with 504 (docs/benchmarks/compare).
            "message_timeout": "2s",
            # One round trip before the engine: Envoy sends the headers and the body's
            # chunks without waiting, and the processor answers the headers (the routing
            # mutations included) and the chunks once the last is in. Envoy then ignores
            # mode_override (its docs; verified on 1.40), so the response body is never
            # sent at all: the worker checks a unary answer's output itself, reports it in
            # the headers, and Envoy's Lua rewrites error bodies (engine_errors.py).
            "send_body_without_waiting_for_header_response": True,
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "STREAMED",
                # An HTTP/2 client's trailers end its body.
                "request_trailer_mode": "SEND",
                "response_header_mode": "SEND",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SEND",
            },
            # The replica that answers, so a stream that ends early can ask what it generated.
            "response_attributes": [wire.UPSTREAM_ADDRESS_ATTRIBUTE],
            "mutation_rules": {"allow_all_routing": True},
            # Refusals carry their OpenAI error type and code as dynamic metadata; every
            # request ends with what the processor measured of it (for the access log).
            "metadata_options": {
                "receiving_namespaces": {
                    "untyped": [wire.ERROR_METADATA_NAMESPACE, wire.REQUEST_METADATA_NAMESPACE]
                }
            },
            # The processor sets x-frugal-model and may rewrite :path; routing must see both.
            "route_cache_action": "CLEAR",
        },
    }


def _transcoder_filter(descriptor: bytes, buffer_limit: int) -> dict[str, Any]:
    return {
        "name": m.TRANSCODER_FILTER,
        "typed_config": {
            "@type": m.TRANSCODER,
            "proto_descriptor_bin": base64.b64encode(descriptor).decode(),
            # The transcoder holds a unary body whole; at the connection buffer's size
            # (its default) a body of exactly max_request_bytes was refused with 413
            # over HTTP/1.1 (verified on 1.40), so both get the cap plus headroom.
            "max_request_body_size": buffer_limit,
            "services": [INFERENCE_SERVICE],
            "match_incoming_request_route": True,
            "convert_grpc_status": True,
            "request_validation_options": {"reject_unknown_method": True},
            "print_options": {
                "always_print_primitive_fields": True,
                "preserve_proto_field_names": True,
                "stream_sse_style_delimited": True,
            },
        },
    }


def _policy_filters(config: FrugalConfig, ext_proc: dict[str, Any]) -> list[dict[str, Any]]:
    if not config.safety_filter.enforce:
        return [ext_proc]
    filters = [local_rate_limit_filter(config), ext_proc]
    if config.safety_filter.rate_limit == "envoy":
        filters.append(rate_limit_filter())
    return filters


def _client_headers_sanitised() -> dict[str, Any]:
    """Who the client is comes from the connection alone (module docstring)."""
    return {
        "use_remote_address": True,
        "xff_num_trusted_hops": 0,
        # internal_address_config stays unset: on Envoy 1.40 that makes no address
        # internal, while a config with no ranges made loopback and RFC 1918 internal
        # again (their x-envoy-* timeouts and x-request-id were believed: verified).
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": EARLY_HEADER_MUTATION,
                    # Before the HCM reads them or appends the peer to XFF.
                    "mutations": [
                        {"remove": "x-forwarded-for"},
                        {"remove": "grpc-timeout"},
                        {
                            "remove_on_match": {
                                "key_matcher": {"prefix": "x-envoy-", "ignore_case": True}
                            }
                        },
                    ],
                },
            }
        ],
        "generate_request_id": True,
        "preserve_external_request_id": False,
        # Clients get the id the access log and the usage ledger know the request by.
        "always_set_request_id_in_response": True,
    }


def _edge_timeouts_and_limits(listener: ListenerConfig) -> dict[str, Any]:
    """Timeouts and codec limits; ListenerConfig says why each value."""
    return {
        "request_headers_timeout": m.duration(listener.request_headers_timeout_s),
        "stream_idle_timeout": m.duration(listener.stream_idle_timeout_s),
        # Bounds receiving the request only (disarmed once it is upstream or the answer
        # began); the route's max_stream_duration bounds a stream, the idle timeout a
        # stalled one.
        "request_timeout": m.duration(listener.request_timeout_s),
        # Hard codec limits above the configured ones, which edge_limits.py answers with
        # 431 (the codecs' own refusal reaches the client as a reset or empty reply).
        "max_request_headers_kb": codec_headers_kb(listener),
        "common_http_protocol_options": {
            "max_headers_count": codec_headers_count(listener),
            "idle_timeout": m.duration(listener.idle_timeout_s),
            # Envoy's edge doc suggests REJECT_REQUEST: a codec error, 400 over HTTP/1
            # but a stream reset with no answer over HTTP/2 (edge_limits.py).
            # Dropping such a header protects the same upstreams (that treat '_' and
            # '-' alike) and serves the request.
            "headers_with_underscores_action": "DROP_HEADER",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": listener.max_concurrent_streams,
            "initial_stream_window_size": listener.initial_stream_window_size,
            "initial_connection_window_size": listener.initial_connection_window_size,
        },
        # Envoy answers `Expect: 100-continue` itself, so a refusal of the headers
        # (edge_limits' 413 for a Content-Length over the cap) follows at once.
        "proxy_100_continue": False,
    }


def _connection_limit(listener: ListenerConfig) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            "@type": CONNECTION_LIMIT,
            "stat_prefix": "public",
            "max_connections": listener.max_connections,
        },
    }


def build_public_listener(config: FrugalConfig, descriptor: bytes) -> m.Listener:
    listener = config.listener
    hcm = {
        "@type": m.HCM,
        "stat_prefix": "public",
        "codec_type": "AUTO",
        **_client_headers_sanitised(),
        **_edge_timeouts_and_limits(listener),
        "rds": {"route_config_name": PUBLIC_ROUTES, "config_source": ADS},
        "local_reply_config": build_local_reply_config(),
        "access_log": build_access_logs(config.access_log),
        "http_filters": [
            edge_limits_filter(listener),
            *_policy_filters(config, skipped_for_unparsed_requests(_ext_proc_filter())),
            engine_errors_filter(),
            _transcoder_filter(descriptor, listener.buffer_limit_bytes),
            gateway_overhead.overhead_filter(),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": m.ROUTER}},
        ],
    }
    return m.parse(
        {
            "name": PUBLIC_LISTENER,
            "address": {"socket_address": {"address": listener.host, "port_value": listener.port}},
            # Envoy's buffer per connection (flow control): it holds the largest allowed
            # body while the processor reads it (ListenerConfig.buffer_limit_bytes).
            "per_connection_buffer_limit_bytes": listener.buffer_limit_bytes,
            "filter_chains": [
                {
                    "filters": [
                        _connection_limit(listener),
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        },
                    ]
                }
            ],
        },
        m.Listener,
    )
