"""Engine errors in OpenAI's shape: a few lines of Lua rewrite the transcoder's error bodies.

Pure layer. When an engine answers with a gRPC error, Envoy's transcoder
(`convert_grpc_status`) sends the client an HTTP status and `{"code", "message",
"details"}` (google.rpc.Status as JSON): not a local reply, so `local_reply_config`
never sees it, and the request processor never sees response bodies (its response
body mode is NONE: it only reads headers and trailers). This filter sits between the
request processor and the transcoder, so on the way back it sees exactly what the
transcoder wrote, and only for an error status does it wait for the body: it turns it
into `{"error": {"message", "type", "code"}}`, the type and code named by the HTTP
status through frugal.openai_errors' one table. The message is kept as the
transcoder escaped it (already valid inside a JSON string); a body that is not the
transcoder's JSON is escaped whole. Bodies already in OpenAI's shape (Envoy's own
local replies) pass unchanged. See the Lua filter's stream handle API (`body()`,
`setBytes`) in Envoy's docs.
"""

from __future__ import annotations

from typing import Any

from control_plane.translate.gateway_overhead import LUA, LUA_FILTER
from frugal import openai_errors

ENGINE_ERRORS_FILTER = LUA_FILTER + ".engine_errors"


def _lua_table() -> str:
    rows = [
        f'  [{status}] = {{"{kind}", "{code}"}},'
        for status, (kind, code) in sorted(openai_errors.UPSTREAM_ERRORS.items())
    ]
    return "{\n" + "\n".join(rows) + "\n}"


_LUA_SOURCE = f"""
local ERRORS = {_lua_table()}
local ENGINE_ERROR = {{"{openai_errors.ENGINE_ERROR[0]}", "{openai_errors.ENGINE_ERROR[1]}"}}

-- The JSON string value of "message", still escaped; nil when there is none.
local function escaped_message(raw)
  local _, start = string.find(raw, '"message"%s*:%s*"')
  if start == nil then
    return nil
  end
  local i = start + 1
  while i <= #raw do
    local c = string.sub(raw, i, i)
    if c == "\\\\" then
      i = i + 2
    elseif c == '"' then
      return string.sub(raw, start + 1, i - 1)
    else
      i = i + 1
    end
  end
  return nil
end

local function escaped(text)
  return (string.gsub(text, '[%c"\\\\]', function(c)
    return string.format("\\\\u%04x", string.byte(c))
  end))
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local status = tonumber(headers:get(":status") or "")
  if status == nil or status < 400 then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local raw = body:getBytes(0, body:length())
  if string.find(raw, '^%s*{{%s*"error"%s*:') then
    return
  end
  local message = escaped_message(raw)
  if message == nil then
    message = escaped(raw)
  end
  if message == "" then
    message = "The engine answered with status " .. status .. "."
  end
  local kind = ERRORS[status] or ENGINE_ERROR
  body:setBytes('{{"error":{{"message":"' .. message .. '","type":"' .. kind[1]
    .. '","code":"' .. kind[2] .. '"}}}}')
  headers:replace("content-type", "application/json")
end
"""


def engine_errors_filter() -> dict[str, Any]:
    return {
        "name": ENGINE_ERRORS_FILTER,
        "typed_config": {"@type": LUA, "default_source_code": {"inline_string": _LUA_SOURCE}},
    }
