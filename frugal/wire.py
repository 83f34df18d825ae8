"""The wire contract between Frugal's processes (shared library, pure constants).

Header, trailer and metadata names and port conventions that more than one process reads or
writes (the safety filter, the engine workers, the Envoy configuration the control plane
translates, the benchmarks, the tests) are defined here once; nobody spells them itself.
"""

from __future__ import annotations

# Default ports (ARCHITECTURE.md, "Ports"): the safety filter's gRPC port, and the first
# engine worker's. An engine worker's Prometheus port is its gRPC port plus the offset.
DEFAULT_SAFETY_FILTER_PORT = 50051
DEFAULT_ENGINE_PORT = 50061
ENGINE_METRICS_PORT_OFFSET = 1000


def engine_metrics_port(port: int) -> int:
    """The Prometheus port of the engine worker serving gRPC on `port`."""
    return port + ENGINE_METRICS_PORT_OFFSET


# Envoy's request id (the HCM generates it), forwarded to every service and engine.
REQUEST_ID_HEADER = "x-request-id"

# Set by the safety filter's request processor from the caller's key, over any client-sent
# copy (which it always removes), for the rate limit actions the control plane configures
# when Envoy's global rate limit filter does the rpm check (`safety_filter.rate_limit:
# envoy`). An absent rpm means unlimited. Clients may not send any of them.
KEY_ID_HEADER = "x-frugal-key-id"
TENANT_HEADER = "x-frugal-tenant"
KEY_RPM_HEADER = "x-frugal-key-rpm"
KEY_TPM_HEADER = "x-frugal-key-tpm"
KEY_MODELS_HEADER = "x-frugal-key-models"
IDENTITY_HEADERS = (KEY_ID_HEADER, TENANT_HEADER, KEY_RPM_HEADER, KEY_TPM_HEADER, KEY_MODELS_HEADER)

# Set by the request processor (never by a client): the key of the prompt's prefix
# (frugal.prefix_key), which a model with `prefix_routing` is routed by.
PREFIX_HEADER = "x-frugal-prefix"
# Set by the request processor (never by a client) for a model with a group picker
# (frugal.group_picker): the replica group it picked; a route per group matches it.
GROUP_HEADER = "x-frugal-group"

# ext_proc attributes (CEL) Envoy sends the request processor: the replica that answers
# (on the response headers), so a stream that ends early can ask it what it generated.
EXT_PROC_ATTRIBUTES_NAMESPACE = "envoy.filters.http.ext_proc"
UPSTREAM_ADDRESS_ATTRIBUTE = "upstream.address"

# The rate limit descriptor Envoy sends the RateLimitService: its domain and entry keys.
RATE_LIMIT_DOMAIN = "frugal"
RATE_LIMIT_KEY_ID = "key_id"
RATE_LIMIT_RPM = "rpm"

# Set by ext_proc once the body named a served model; the routes match on it.
MODEL_HEADER = "x-frugal-model"

# What an engine worker reports of a request: its own times (trailers, and response
# headers of a unary answer), the tokens used (trailers), and what its output checks did
# (trailers; categories only, never the text).
ENGINE_MS = "x-frugal-engine-ms"
ENGINE_TTFT_MS = "x-frugal-engine-ttft-ms"
PROMPT_TOKENS = "x-frugal-prompt-tokens"
COMPLETION_TOKENS = "x-frugal-completion-tokens"
OUTPUT_REDACTED = "x-frugal-output-redacted"
OUTPUT_BLOCKED = "x-frugal-output-blocked"
# A stream's engine time, as the SSE comment line the worker writes before `data: [DONE]`
# (HTTP/1.1 clients never see trailers).
ENGINE_MS_COMMENT = f": {ENGINE_MS}="

# The gateway's own time on a request (Envoy's measurement, sent to the client), and the
# internal header the route table sets for the Lua filter that computes it.
GATEWAY_OVERHEAD_HEADER = "x-frugal-gateway-overhead-ms"
GATEWAY_OVERHEAD_US_HEADER = "x-frugal-internal-gateway-overhead-us"

# Dynamic metadata the safety filter's ext_proc sends with a refusal: the OpenAI error's
# type and code, which Envoy's local reply mapper puts in the body.
ERROR_METADATA_NAMESPACE = "frugal.error"
ERROR_TYPE_KEY = "type"
ERROR_CODE_KEY = "code"
# Dynamic metadata of a request's summary (ext_proc), which the access log reads.
REQUEST_METADATA_NAMESPACE = "frugal.request"
REQUEST_METADATA_KEYS = (
    "key_id",
    "tenant",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "engine_ms",
    "engine_ttft_ms",
    "error",
)
