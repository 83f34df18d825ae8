"""OpenAI's rate-limit headers and refusals, from an admission decision.

Pure layer. Every answer to an admitted request carries the key's standing, as OpenAI's API
does: `x-ratelimit-{limit,remaining,reset}-requests` and `-tokens` (only for the limits the
key has). A refusal carries the same headers and `retry-after`, whole seconds until the
refused request would fit (frugal.accounting.windows rounds up: retrying early only earns
another 429).
"""

from __future__ import annotations

from frugal.accounting import windows
from frugal.accounting.admission import Admitted, Refused, TokenWindow
from frugal.accounting.request_rate import RateDecision
from safety_filter.errors import ApiError, requests_exhausted, tokens_exhausted
from safety_filter.ratelimit.descriptors import (
    HEADER_LIMIT,
    HEADER_REMAINING,
    HEADER_RESET,
    HEADER_RETRY_AFTER,
)

Headers = tuple[tuple[str, str], ...]
HEADER_LIMIT_TOKENS = "x-ratelimit-limit-tokens"
HEADER_REMAINING_TOKENS = "x-ratelimit-remaining-tokens"
HEADER_RESET_TOKENS = "x-ratelimit-reset-tokens"


def standing_headers(requests: RateDecision | None, tokens: TokenWindow | None) -> Headers:
    headers: list[tuple[str, str]] = []
    if requests is not None:
        headers += [
            (HEADER_LIMIT, str(requests.limit)),
            (HEADER_REMAINING, str(requests.remaining)),
            (HEADER_RESET, windows.format_reset(requests.reset_s)),
        ]
    if tokens is not None:
        headers += [
            (HEADER_LIMIT_TOKENS, str(tokens.limit)),
            (HEADER_REMAINING_TOKENS, str(tokens.remaining)),
            (HEADER_RESET_TOKENS, windows.format_reset(tokens.reset_s)),
        ]
    return tuple(headers)


def admitted_headers(admitted: Admitted) -> Headers:
    return standing_headers(admitted.requests, admitted.tokens)


def refusal(refused: Refused) -> ApiError:
    """The 429 that refuses the request, with its headers."""
    headers = standing_headers(refused.requests, refused.tokens)
    if refused.limit == "requests":
        decision = refused.requests
        assert decision is not None  # refused for its rate: the key has an rpm limit
        wait = windows.format_reset(decision.reset_s)
        retry = ((HEADER_RETRY_AFTER, str(windows.whole_seconds(decision.reset_s))),)
        message = (
            f"Rate limit reached for requests per min (RPM): Limit {decision.limit}, "
            f"Requested 1. Please try again in {wait}."
        )
        return requests_exhausted(message, headers + retry)
    window = refused.tokens
    assert window is not None  # refused for its tokens: the key has a tpm limit
    retry = ((HEADER_RETRY_AFTER, str(windows.whole_seconds(window.reset_s))),)
    return tokens_exhausted(window.limit, window.remaining, window.reset_s, headers + retry)
