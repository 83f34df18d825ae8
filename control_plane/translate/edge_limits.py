"""Edge limits on a request's headers and declared body size, answered with OpenAI errors.

Pure layer. Envoy's codecs enforce `max_request_headers_kb` and `max_headers_count`
themselves, but what a client then sees is no answer at all: an HTTP/2 stream is
reset, and an HTTP/1 codec error's 431 goes through the encoder filters, where the
request processor (ext_proc) waits for the safety filter while the HCM closes the
connection, so the client reads an empty reply (verified on Envoy 1.40: access log
status 431, 0 bytes sent). So the configured limits are checked here, by a few lines
of Lua first in the filter chain, on headers Envoy has already parsed: a request over
them gets 431 (413 for a Content-Length over the body cap) as a local reply, which
`local_reply_config` turns into `{"error": {...}}` with this message. The codecs keep
a hard limit at twice the configured one (CODEC_HEADROOM) for what no filter should
ever have to hold.

The Content-Length check answers an HTTP/1 body over the cap before any of it is
read: with `Expect: 100-continue` Envoy has sent `100 Continue` already
(proxy_100_continue is off), and the 413 follows at once instead of after the body
(or the request processor's 2 s timeout as a 504, for a client that waits for an
answer before sending: verified on 1.40). Not over HTTP/2: there an answer before the
body is followed by a stream reset, which curl 7.88 reports as a framing error
instead of the 413; the safety filter's 413 as the body comes in reaches it intact.
See the Lua filter's stream handle API (`headers()`, `respond()`) in Envoy's docs.
"""

from __future__ import annotations

from typing import Any

from control_plane.model import ListenerConfig
from control_plane.translate.gateway_overhead import LUA, LUA_FILTER

EDGE_LIMITS_FILTER = LUA_FILTER + ".edge_limits"
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

function envoy_on_request(handle)
  local headers = handle:headers()
  local count, bytes = 0, 0
  for name, value in pairs(headers) do
    count = count + 1
    bytes = bytes + #name + #value
  end
  if count > MAX_HEADERS then
    handle:respond({{[":status"] = "431"}}, "The request has " .. count
      .. " headers; the limit is " .. MAX_HEADERS .. ".")
  elseif bytes > MAX_HEADER_BYTES then
    handle:respond({{[":status"] = "431"}}, "The request headers are " .. bytes
      .. " bytes; the limit is " .. MAX_HEADER_BYTES .. " bytes.")
  elseif string.sub(handle:streamInfo():protocol() or "", 1, 6) == "HTTP/1" then
    local length = tonumber(headers:get("content-length") or "")
    if length ~= nil and length > MAX_BODY_BYTES then
      handle:respond({{[":status"] = "413"}}, "The request body is larger than the limit of "
        .. MAX_BODY_BYTES .. " bytes.")
    end
  end
end
"""


def edge_limits_filter(listener: ListenerConfig) -> dict[str, Any]:
    source = _LUA_SOURCE.format(
        max_header_bytes=listener.max_request_headers_kb * 1024,
        max_headers=listener.max_headers_count,
        max_body_bytes=listener.max_request_bytes,
    )
    return {
        "name": EDGE_LIMITS_FILTER,
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": source}},
    }


def codec_headers_kb(listener: ListenerConfig) -> int:
    return min(listener.max_request_headers_kb * CODEC_HEADROOM, ENVOY_MAX_HEADERS_KB)


def codec_headers_count(listener: ListenerConfig) -> int:
    return min(listener.max_headers_count * CODEC_HEADROOM, ENVOY_MAX_HEADERS_COUNT)
