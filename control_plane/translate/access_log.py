"""The public listener's access log: one JSON object per request, written by Envoy to a file.

Pure layer. Envoy's JSON formatter keeps a value's type when the value is a single
command: status, durations and byte counts are numbers, metadata numbers stay
numbers, and a value Envoy does not have is `null` (verified on Envoy 1.40).
Where each field comes from:
- Envoy itself: time, request_id, method, path, status, flags, duration_ms,
  upstream, bytes_received, bytes_sent, and gateway_ms (gateway_overhead.py);
- the safety filter's ext_proc metadata (namespace `frugal.request`, set only by
  the safety filter, never by a client header): the caller's key_id and tenant once
  its key was checked, the model
  once the body named a served one (`unknown` for a refused request), then at the
  end token counts, times and the error; `null` for what that request never
  reached. Not x-frugal-model: a refused request may still carry a client's copy.
Envoy flushes the file every `--file-flush-interval-msec` (frugal up: 1 s) and
reopens it on POST /reopen_logs (access_log_rotation.py).
See envoy/api: config/accesslog/v3, extensions/access_loggers/file/v3, and the
"Access logging / Format rules" page of Envoy's docs.
"""

from __future__ import annotations

from typing import Any

# Imported for json_format.ParseDict of the `@type` below (messages.py says why).
import envoy.extensions.access_loggers.file.v3.file_pb2  # noqa: F401

from control_plane.model import AccessLogConfig
from control_plane.translate import gateway_overhead
from control_plane.translate.messages import TYPE
from frugal import wire

FILE_ACCESS_LOG = TYPE + "envoy.extensions.access_loggers.file.v3.FileAccessLog"


def _metadata(namespace: str, key: str) -> str:
    return f"%DYNAMIC_METADATA({namespace}:{key})%"


ACCESS_LOG_FIELDS: dict[str, str] = {
    "time": "%START_TIME%",
    "request_id": f"%REQ({wire.REQUEST_ID_HEADER.upper()})%",
    "method": "%REQ(:METHOD)%",
    # The transcoder rewrites :path to the gRPC method and keeps the one it was given
    # in x-envoy-original-path: the client's, or its `:stream` binding for a stream.
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    # What the safety filter's ext_proc processor measured of the request.
    **{key: _metadata(wire.REQUEST_METADATA_NAMESPACE, key) for key in wire.REQUEST_METADATA_KEYS},
    "duration_ms": "%DURATION%",
    "gateway_ms": _metadata(gateway_overhead.METADATA_NAMESPACE, gateway_overhead.METADATA_KEY),
    "upstream": "%UPSTREAM_HOST%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}


def build_access_logs(config: AccessLogConfig) -> list[dict[str, Any]]:
    """The HCM's `access_log` list: empty when the log is off."""
    if not config.enabled:
        return []
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_ACCESS_LOG,
                "path": config.path,
                "log_format": {"json_format": ACCESS_LOG_FIELDS},
            },
        }
    ]
