"""CheckResponses for Envoy's ext_authz filter: allow with identity headers, or deny.

Pure layer. Every refusal of a key (missing, malformed, unknown, expired,
revoked) is the same 401 with the same plain-text body, so a caller learns
nothing about which keys exist; Envoy's local_reply_config wraps the text into
OpenAI's `{"error": {...}}` with type authentication_error / code invalid_api_key
(control_plane/translate/local_replies.py).
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped]

from frugal import wire
from frugal.keys import KeyRecord
from safety_filter.authz.credentials import CREDENTIAL_HEADERS

UNAUTHENTICATED_BODY = (
    "Incorrect API key provided. Send a valid Frugal API key as "
    "`Authorization: Bearer <key>`; ask your administrator for one."
)
UNAVAILABLE_BODY = "The authentication service is temporarily unavailable. Please retry."

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> Any:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def identity_headers(record: KeyRecord) -> tuple[dict[str, str], list[str]]:
    """(headers to set, headers to remove) for an authenticated request.

    Set headers OVERWRITE client-sent copies (ENVOY_NOTES, ext_authz). An unlimited
    limit is sent as a removal rather than an empty value: Envoy drops empty header
    values (HeaderValueOption.keep_empty_value), which would let a client-sent copy through.
    """
    models = wire.ALL_MODELS if record.models is None else ",".join(record.models)
    to_set = {
        wire.KEY_ID_HEADER: record.id,
        wire.TENANT_HEADER: record.tenant,
        wire.KEY_MODELS_HEADER: models,
    }
    to_remove = list(CREDENTIAL_HEADERS)
    for header, limit in ((wire.KEY_RPM_HEADER, record.rpm), (wire.KEY_TPM_HEADER, record.tpm)):
        if limit is None:
            to_remove.append(header)
        else:
            to_set[header] = str(limit)
    return to_set, to_remove


def allowed(record: KeyRecord) -> Any:
    to_set, to_remove = identity_headers(record)
    metadata = struct_pb2.Struct()
    metadata.update({wire.AUTHZ_KEY_ID: record.id, wire.AUTHZ_TENANT: record.tenant})
    return auth.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=auth.OkHttpResponse(
            headers=[_header(k, v) for k, v in to_set.items()], headers_to_remove=to_remove
        ),
        dynamic_metadata=metadata,
    )


def denied(grpc_code: int, http_status: int, body: str, headers: dict[str, str]) -> Any:
    return auth.CheckResponse(
        status=status_pb2.Status(code=grpc_code),
        denied_response=auth.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=[_header(k, v) for k, v in headers.items()],
            body=body,
        ),
    )


def unauthenticated() -> Any:
    return denied(
        code_pb2.UNAUTHENTICATED, 401, UNAUTHENTICATED_BODY, {"www-authenticate": "Bearer"}
    )


def unavailable() -> Any:
    return denied(code_pb2.UNAVAILABLE, 503, UNAVAILABLE_BODY, {"retry-after": "1"})
