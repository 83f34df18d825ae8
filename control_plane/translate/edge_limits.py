"""Edge limits on a request's headers and declared body size, answered with OpenAI errors.

Pure layer. Envoy's codecs enforce `max_request_headers_kb` and `max_headers_count`
themselves, but an HTTP/2 client then sees its stream reset, with no answer. So the
configured limits are checked here, by a few lines of Lua first in the filter chain,
on headers Envoy has already parsed: a request over them gets 431 (413 for a
Content-Length over the body cap) as a local reply, which `local_reply_config` turns
into `{"error": {...}}` with this message. The codecs keep a hard limit at twice the
configured one (CODEC_HEADROOM) for what no filter should ever have to hold.

The Content-Length check answers an HTTP/1 body over the cap before any of it is
read: with `Expect: 100-continue` Envoy has sent `100 Continue` already
(proxy_100_continue is off), and the 413 follows at once instead of after the body
(or the request processor's 2 s timeout as a 504, for a client that waits for an
answer before sending: verified on 1.40). Not over HTTP/2: there an answer before the
body is followed by a reset of the stream, which curl 7.88 at times reports as a
framing error instead of the answer; the safety filter's 413 as the body comes in
reaches it intact, and an HTTP/2 431 waits for the body (bounded by the buffer).

A codec's own refusal (malformed HTTP/1, headers past the codec limits, headers not
in by request_headers_timeout) is a local reply for a request whose headers never
parsed: local_reply_config marks it (UNPARSED_REQUEST_HEADER) and the request
processor is wrapped to skip such replies (skipped_for_unparsed_requests), so
HTTP/1 clients get the OpenAI error body before the connection closes. Without it
the processor held the reply while the HCM closed the connection: the client read an
empty reply (verified on 1.40: access log status 431, 0 bytes sent). An HTTP/2
codec refusal is a stream reset, with no answer to send.
See the Lua filter's stream handle API (`headers()`, `respond()`) in Envoy's docs.
"""

from __future__ import annotations

from typing import Any

# Imported for json_format.ParseDict of the `@type`s below (messages.py says why).
import envoy.extensions.common.matching.v3.extension_matcher_pb2
import envoy.extensions.filters.common.matcher.action.v3.skip_action_pb2
import envoy.type.matcher.v3.http_inputs_pb2  # noqa: F401

from control_plane.model import ListenerConfig
from control_plane.translate.gateway_overhead import LUA, LUA_FILTER
from control_plane.translate.messages import TYPE

EDGE_LIMITS_FILTER = LUA_FILTER + ".edge_limits"
# Set by local_reply_config on a reply to a request whose headers never parsed (a codec
# error); the request processor is skipped for it and the client never sees the header.
UNPARSED_REQUEST_HEADER = "x-frugal-unparsed-request"
EXTENSION_WITH_MATCHER = TYPE + "envoy.extensions.common.matching.v3.ExtensionWithMatcher"
RESPONSE_HEADER_INPUT = TYPE + "envoy.type.matcher.v3.HttpResponseHeaderMatchInput"
SKIP_FILTER = TYPE + "envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
# Envoy's codec limits, as a multiple of the configured ones (capped at its maxima).
CODEC_HEADROOM = 2
# HttpConnectionManager.max_request_headers_kb and HttpProtocolOptions.max_headers_count
# accept at most these (envoy/api validation rules).
ENVOY_MAX_HEADERS_KB = 8192
ENVOY_MAX_HEADERS_COUNT = 8192

_LUA_SOURCE = """
local MAX_HEADER_BYTES = {max_header_bytes}
local MAX_HEADERS = {max_headers}
local MAX_BODY_BYTES = {max_body_bytes}

-- The status and message of a refusal, or nil.
local function refusal(handle, http1)
  local headers = handle:headers()
  local count, bytes = 0, 0
  for name, value in pairs(headers) do
    count = count + 1
    bytes = bytes + #name + #value
  end
  if count > MAX_HEADERS then
    return "431", "The request has " .. count .. " headers; the limit is " .. MAX_HEADERS .. "."
  end
  if bytes > MAX_HEADER_BYTES then
    return "431", "The request headers are " .. bytes .. " bytes; the limit is "
      .. MAX_HEADER_BYTES .. " bytes."
  end
  local length = tonumber(headers:get("content-length") or "")
  if http1 and length ~= nil and length > MAX_BODY_BYTES then
    return "413", "The request body is larger than the limit of " .. MAX_BODY_BYTES .. " bytes."
  end
  return nil
end

function envoy_on_request(handle)
  local http1 = string.sub(handle:streamInfo():protocol() or "", 1, 6) == "HTTP/1"
  local status, message = refusal(handle, http1)
  if status == nil then
    return
  end
  if not http1 then
    -- Read the body (bounded by the connection's buffer) before answering, so the
    -- answer does not come with a reset of a stream the client is still sending on.
    handle:body()
  end
  handle:respond({{[":status"] = status}}, message)
end

function envoy_on_response(handle)
  handle:headers():remove("{marker}")
end
"""


def edge_limits_filter(listener: ListenerConfig) -> dict[str, Any]:
    source = _LUA_SOURCE.format(
        max_header_bytes=listener.max_request_headers_kb * 1024,
        max_headers=listener.max_headers_count,
        max_body_bytes=listener.max_request_bytes,
        marker=UNPARSED_REQUEST_HEADER,
    )
    return {
        "name": EDGE_LIMITS_FILTER,
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": source}},
    }


def codec_headers_kb(listener: ListenerConfig) -> int:
    return min(listener.max_request_headers_kb * CODEC_HEADROOM, ENVOY_MAX_HEADERS_KB)


def codec_headers_count(listener: ListenerConfig) -> int:
    return min(listener.max_headers_count * CODEC_HEADROOM, ENVOY_MAX_HEADERS_COUNT)


def skipped_for_unparsed_requests(http_filter: dict[str, Any]) -> dict[str, Any]:
    """`http_filter` wrapped so that it is skipped for a reply to a codec error."""
    return {
        "name": http_filter["name"],
        "typed_config": {
            "@type": EXTENSION_WITH_MATCHER,
            "extension_config": http_filter,
            "xds_matcher": {
                "matcher_list": {
                    "matchers": [
                        {
                            "predicate": {
                                "single_predicate": {
                                    "input": {
                                        "name": "unparsed",
                                        "typed_config": {
                                            "@type": RESPONSE_HEADER_INPUT,
                                            "header_name": UNPARSED_REQUEST_HEADER,
                                        },
                                    },
                                    "value_match": {"exact": "true"},
                                }
                            },
                            "on_match": {
                                "action": {
                                    "name": "skip",
                                    "typed_config": {"@type": SKIP_FILTER},
                                }
                            },
                        }
                    ]
                }
            },
        },
    }
