"""`x-frugal-gateway-overhead-ms`: how long the gateway held a request before an engine saw it.

Pure layer. The value is Envoy's own measurement: from the first byte it received
from the client (DS_RX_BEG) to the first byte it sent to the engine (US_TX_BEG),
so it covers reading the request, ext_authz, the local rate limit, ext_proc's
request phases, the global rate limit, transcoding and getting an upstream
connection. Envoy's duration formatter prints whole units only
(`%COMMON_DURATION(START:END:us)%`), so the route table adds the microseconds
under an internal header and a few lines of Lua, right after the router, turn
them into milliseconds with three decimals (and into dynamic metadata for the
access log), then drop the internal header. A response no engine answered (an
ext_authz 401, a direct response, a rate-limit 429) has no US_TX_BEG: Envoy
formats it as empty, the route header is not added, and no overhead header goes
out. Verified on Envoy 1.40: COMMON_DURATION in route `response_headers_to_add`,
`keep_empty_value: false`, Lua `streamInfo():dynamicMetadata():set`.
See envoy docs "Access logging / Command operators" (COMMON_DURATION) and the
Lua filter's stream handle API.
"""

from __future__ import annotations

from typing import Any

# Imported for json_format.ParseDict of the `@type` below (messages.py says why).
import envoy.extensions.filters.http.lua.v3.lua_pb2  # noqa: F401

from control_plane.translate.messages import TYPE
from frugal import wire

LUA = TYPE + "envoy.extensions.filters.http.lua.v3.Lua"
LUA_FILTER = "envoy.filters.http.lua"
METADATA_NAMESPACE = "frugal.gateway"
METADATA_KEY = "overhead_ms"

_LUA_SOURCE = f"""
function envoy_on_response(handle)
  local headers = handle:headers()
  -- No header (a local reply: no engine was asked) gives no value at all, which
  -- tonumber refuses; test it first.
  local raw = headers:get("{wire.GATEWAY_OVERHEAD_US_HEADER}")
  headers:remove("{wire.GATEWAY_OVERHEAD_US_HEADER}")
  local us = raw and tonumber(raw)
  if us == nil then
    return
  end
  local ms = string.format("%.3f", us / 1000)
  headers:replace("{wire.GATEWAY_OVERHEAD_HEADER}", ms)
  handle:streamInfo():dynamicMetadata():set("{METADATA_NAMESPACE}", "{METADATA_KEY}", tonumber(ms))
end
"""


def microseconds_header() -> dict[str, Any]:
    """For the route table's `response_headers_to_add`: applied by the router to every
    response an engine sent (headers from an engine that names it are overwritten)."""
    return {
        "header": {
            "key": wire.GATEWAY_OVERHEAD_US_HEADER,
            "value": "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%",
        },
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        "keep_empty_value": False,
    }


def overhead_filter() -> dict[str, Any]:
    """The Lua filter; it goes just before the router, so it is the first to see a
    response on its way back."""
    return {
        "name": LUA_FILTER,
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": _LUA_SOURCE}},
    }
