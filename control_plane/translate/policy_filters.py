"""The policy filters around the safety filter's request processor.

Pure layer. Order on the way in (ARCHITECTURE "One request"):
1. local_ratelimit: a per-Envoy token bucket over all traffic (a backstop that sheds a
   flood before it reaches Python);
2. (ext_proc, listener.py: the API key, body checks, the key's rpm and token
   reservation in one Redis script, `x-frugal-model`);
3. ratelimit, only with `safety_filter.rate_limit: envoy`: the per-key request rate,
   decided by the safety filter's RateLimitService over Redis from the identity headers
   ext_proc set. It must come after ext_proc: Envoy's rate limit filter only acts on a
   route with a cluster, and the model route is known only once ext_proc has set the
   model header. A request it refuses has its token reservation settled at 0 by
   ext_proc's response phase. It costs a second Python and Redis round trip before the
   engine, which is why `inline` is the default.
Every policy service fails closed with 503 (ENVOY_NOTES: the rate limit filter's default
is to fail open).
"""

from __future__ import annotations

from typing import Any

from control_plane.model import FrugalConfig
from control_plane.translate import messages as m
from frugal import wire

SAFETY_FILTER_CLUSTER = "safety_filter"
UNAVAILABLE = {"code": "ServiceUnavailable"}


def _safety_filter_grpc(timeout: str) -> dict[str, Any]:
    return {"envoy_grpc": {"cluster_name": SAFETY_FILTER_CLUSTER}, "timeout": timeout}


def local_rate_limit_filter(config: FrugalConfig) -> dict[str, Any]:
    rps = config.limits.local_requests_per_second
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "_"}
    return {
        "name": m.LOCAL_RATE_LIMIT_FILTER,
        "typed_config": {
            "@type": m.LOCAL_RATE_LIMIT,
            "stat_prefix": "local_rate_limit",
            "token_bucket": {"max_tokens": rps, "tokens_per_fill": rps, "fill_interval": "1s"},
            # Does nothing unless both are set (ENVOY_NOTES).
            "filter_enabled": always,
            "filter_enforced": always,
            "status": {"code": "TooManyRequests"},
        },
    }


def rate_limit_filter() -> dict[str, Any]:
    return {
        "name": m.RATE_LIMIT_FILTER,
        "typed_config": {
            "@type": m.RATE_LIMIT,
            "domain": wire.RATE_LIMIT_DOMAIN,
            "timeout": "1s",
            "failure_mode_deny": True,
            "status_on_error": UNAVAILABLE,
            # Envoy passes the RLS's response headers (OpenAI's x-ratelimit-*-requests) to
            # the client only on a 429; the draft standard headers, made from the RLS's
            # descriptor statuses, tell every client its budget on every answer.
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {
                "grpc_service": _safety_filter_grpc("1s"),
                "transport_api_version": "V3",
            },
            "rate_limits": [
                {
                    "actions": [
                        {
                            "request_headers": {
                                "header_name": wire.KEY_ID_HEADER,
                                "descriptor_key": wire.RATE_LIMIT_KEY_ID,
                            }
                        },
                        {
                            "request_headers": {
                                "header_name": wire.KEY_RPM_HEADER,
                                "descriptor_key": wire.RATE_LIMIT_RPM,
                                "skip_if_absent": True,
                            }
                        },
                    ]
                }
            ],
        },
    }
