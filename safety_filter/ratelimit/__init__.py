"""Envoy's global rate limit service (RLS v3) for per-key requests per minute."""

from safety_filter.ratelimit.service import RateLimitService, add_ratelimit_servicer

__all__ = ["RateLimitService", "add_ratelimit_servicer"]
