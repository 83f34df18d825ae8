"""Building and reading Envoy ext_proc messages: the conversions the processor needs.

Thin layer over the generated protobufs, so the processor reads as decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
from google.protobuf.struct_pb2 import Struct

from frugal import wire
from safety_filter.errors import ApiError


def header_value(headers: ext.HttpHeaders | ext.HttpTrailers, name: str) -> str:
    source = headers.headers if isinstance(headers, ext.HttpHeaders) else headers.trailers
    for header in source.headers:
        if header.key == name:
            return str(header.raw_value.decode() if header.raw_value else header.value)
    return ""


def header_dict(headers: ext.HttpHeaders) -> dict[str, str]:
    """Every header by its (lowercase) name; a repeated header keeps its first value."""
    found: dict[str, str] = {}
    for header in headers.headers.headers:
        found.setdefault(
            header.key, header.raw_value.decode() if header.raw_value else header.value
        )
    return found


def attribute(request: ext.ProcessingRequest, name: str) -> str:
    """A string attribute Envoy sent with this message ("" when it sent none)."""
    attributes = request.attributes.get(wire.EXT_PROC_ATTRIBUTES_NAMESPACE)
    if attributes is None or name not in attributes.fields:
        return ""
    return str(attributes.fields[name].string_value)


def set_header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, raw_value=value.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


Namespaces = Mapping[str, Mapping[str, Any]]


def dynamic_metadata(namespaces: Namespaces) -> Struct:
    """`{namespace: {key: value}}` as ProcessingResponse.dynamic_metadata. Envoy takes it
    with every kind of response, keeps only namespaces listed in its metadata_options'
    receiving_namespaces, and merges each into the stream's metadata (ext_proc.cc,
    Filter::setDynamicMetadata)."""
    metadata = Struct()
    metadata.update(namespaces)
    return metadata


def immediate_response(
    error: ApiError, metadata: Namespaces | None = None
) -> ext.ProcessingResponse:
    """A refusal. Envoy's local_reply_config turns the plain message into OpenAI's shape
    with the type and code sent as dynamic metadata (control_plane/translate/local_replies.py);
    `metadata` adds other namespaces."""
    error_fields = {wire.ERROR_TYPE_KEY: error.type, wire.ERROR_CODE_KEY: error.code}
    namespaces = {wire.ERROR_METADATA_NAMESPACE: error_fields, **(metadata or {})}
    headers = ext.HeaderMutation(set_headers=[set_header(k, v) for k, v in error.headers])
    return ext.ProcessingResponse(
        immediate_response=ext.ImmediateResponse(
            status={"code": error.status}, headers=headers, body=error.message.encode()
        ),
        dynamic_metadata=dynamic_metadata(namespaces),
    )
