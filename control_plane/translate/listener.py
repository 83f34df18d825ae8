"""The public listener: edge limits, the safety filter, the JSON<->gRPC transcoder, the router.

Pure layer. Filter order matters (ENVOY_NOTES): ext_proc sits before the
transcoder so it sees the client's JSON on the way in and SSE on the way out.
"""

from __future__ import annotations

import base64
from typing import Any

from control_plane.model import FrugalConfig
from control_plane.translate import gateway_overhead
from control_plane.translate import messages as m
from control_plane.translate.access_log import build_access_logs
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


def _transcoder_filter(descriptor: bytes) -> dict[str, Any]:
    return {
        "name": m.TRANSCODER_FILTER,
        "typed_config": {
            "@type": m.TRANSCODER,
            "proto_descriptor_bin": base64.b64encode(descriptor).decode(),
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


def build_public_listener(config: FrugalConfig, descriptor: bytes) -> m.Listener:
    listener = config.listener
    hcm = {
        "@type": m.HCM,
        "stat_prefix": "public",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "generate_request_id": True,
        # Clients get the id the access log and the usage ledger know the request by.
        "always_set_request_id_in_response": True,
        "stream_idle_timeout": m.duration(listener.stream_idle_timeout_s),
        "request_headers_timeout": "10s",
        "max_request_headers_kb": 60,
        "common_http_protocol_options": {"max_headers_count": 100},
        "http2_protocol_options": {"max_concurrent_streams": 1024},
        "rds": {"route_config_name": PUBLIC_ROUTES, "config_source": ADS},
        "local_reply_config": build_local_reply_config(),
        "access_log": build_access_logs(config.access_log),
        "http_filters": [
            *_policy_filters(config, _ext_proc_filter()),
            engine_errors_filter(),
            _transcoder_filter(descriptor),
            gateway_overhead.overhead_filter(),
            {"name": "envoy.filters.http.router", "typed_config": {"@type": m.ROUTER}},
        ],
    }
    return m.parse(
        {
            "name": PUBLIC_LISTENER,
            "address": {"socket_address": {"address": listener.host, "port_value": listener.port}},
            # Envoy's buffer per connection (flow control); the processor refuses bodies
            # above the cap with 413 as their chunks come in.
            "per_connection_buffer_limit_bytes": listener.max_request_bytes,
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        },
        m.Listener,
    )
