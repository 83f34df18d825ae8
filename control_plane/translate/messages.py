"""Turning plain dicts written in Envoy's own JSON shape into typed Envoy messages.

Pure layer. The translators write Envoy config as dicts (readable next to Envoy's
docs) and parse them here; `json_format.ParseDict` refuses unknown fields, so a
typo fails at translation time, not in Envoy. Every module whose type appears
behind an `@type` must be imported before parsing (ENVOY_NOTES), hence the
imports below.
"""

from __future__ import annotations

from typing import Any, TypeVar

import envoy.config.cluster.v3.cluster_pb2
import envoy.config.endpoint.v3.endpoint_pb2
import envoy.config.listener.v3.listener_pb2
import envoy.config.route.v3.route_pb2
import envoy.extensions.filters.http.ext_proc.v3.ext_proc_pb2
import envoy.extensions.filters.http.grpc_json_transcoder.v3.transcoder_pb2
import envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2
import envoy.extensions.filters.http.ratelimit.v3.rate_limit_pb2
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2
import envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

Listener = envoy.config.listener.v3.listener_pb2.Listener
RouteConfiguration = envoy.config.route.v3.route_pb2.RouteConfiguration
Cluster = envoy.config.cluster.v3.cluster_pb2.Cluster
ClusterLoadAssignment = envoy.config.endpoint.v3.endpoint_pb2.ClusterLoadAssignment

TYPE = "type.googleapis.com/"
HCM = TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LOCAL_RATE_LIMIT = TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
RATE_LIMIT = TYPE + "envoy.extensions.filters.http.ratelimit.v3.RateLimit"
EXT_PROC = TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
TRANSCODER = TYPE + "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
ROUTER = TYPE + "envoy.extensions.filters.http.router.v3.Router"
FILTER_CONFIG = TYPE + "envoy.config.route.v3.FilterConfig"
HTTP_PROTOCOL_OPTIONS = TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = TYPE + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

LOCAL_RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
RATE_LIMIT_FILTER = "envoy.filters.http.ratelimit"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"


def duration(seconds: float) -> str:
    """A protobuf Duration's JSON form (plain f"{s}s" breaks on 1e-05 and 1e+20)."""
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value.ToJsonString()


def parse(data: dict[str, Any], message_type: type[M]) -> M:
    message: M = json_format.ParseDict(data, message_type())
    return message


def http2_protocol_options(max_concurrent_streams: int = 1024) -> dict[str, Any]:
    """Upstream HTTP/2 (gRPC) options: one pooled connection carries many streams."""
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_PROTOCOL_OPTIONS,
            "explicit_http_config": {
                "http2_protocol_options": {
                    "max_concurrent_streams": max_concurrent_streams,
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                }
            },
        }
    }
