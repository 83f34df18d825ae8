"""Window arithmetic for per-key limits: fixed minute windows and the sliding-window estimate.

Pure layer: no I/O, no clock. The Redis scripts in `request_rate` and `token_budget` make the
atomic decision; these functions name the windows they touch and turn the counts a script
returns into the numbers a client sees (remaining, seconds until reset, header text).

Sliding-window approximation (Cloudflare, "How we built rate limiting capable of scaling to
millions of domains", 2017): the count over the last `window_s` seconds is estimated as
`previous * (1 - elapsed / window_s) + current`, where `previous` and `current` are the counts
of the two most recent fixed windows and `elapsed` is how far `now` is into the current one.
It assumes the previous window's hits were spread evenly, needs two counters per key, and
never lets a burst at a window boundary double the limit as a plain fixed window does.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

WINDOW_S = 60


def window_start(now: float, window_s: int = WINDOW_S) -> int:
    """Unix second at which the fixed window containing `now` began."""
    return int(now // window_s) * window_s


def elapsed_in_window(now: float, window_s: int = WINDOW_S) -> float:
    """Seconds from the start of the current fixed window to `now`, in [0, window_s)."""
    return now - window_start(now, window_s)


def previous_weight(now: float, window_s: int = WINDOW_S) -> float:
    """Share of the previous fixed window still inside the sliding window ending at `now`."""
    return 1.0 - elapsed_in_window(now, window_s) / window_s


def sliding_estimate(previous: int, current: int, weight: float) -> float:
    """Estimated hits in the sliding window: the formula the Lua script also applies."""
    return previous * weight + current


def remaining_hits(limit: int, previous: int, current: int, weight: float) -> int:
    """Largest whole number of further hits the estimate still admits (never negative)."""
    return max(0, math.floor(limit - sliding_estimate(previous, current, weight)))


def seconds_until_fits(
    limit: int, previous: int, current: int, elapsed: float, hits: int, window_s: int = WINDOW_S
) -> float:
    """Seconds until `hits` more would be admitted, assuming nothing else arrives meanwhile.

    The estimate only falls as the previous window's weight decays: first within the current
    window (while `current + hits <= limit`), otherwise in the next one, where today's count
    becomes the decaying previous one. A request larger than the limit never fits; it is
    told to wait until the whole window has reset.
    """
    if hits > limit:
        return seconds_until_reset(previous, current, elapsed, window_s)
    room_now = limit - hits - current
    if room_now >= 0:
        if previous <= room_now:
            return 0.0
        decayed_at = window_s * (1.0 - room_now / previous)
        return max(0.0, decayed_at - elapsed)
    # current > limit - hits >= 0, so current > 0: wait for it to decay in the next window.
    decayed_at = window_s * (1.0 - (limit - hits) / current)
    return (window_s - elapsed) + decayed_at


def seconds_until_reset(
    previous: int, current: int, elapsed: float, window_s: int = WINDOW_S
) -> float:
    """Seconds until the estimate is back to zero (the limit is wholly available again)."""
    if current > 0:
        return (window_s - elapsed) + window_s
    if previous > 0:
        return window_s - elapsed
    return 0.0


def whole_seconds(seconds: float) -> int:
    """Round a wait up to whole seconds: telling a client to retry early only earns a 429."""
    return max(0, math.ceil(seconds - 1e-9))


def format_reset(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` text, e.g. "0s", "12s", "1m30s"."""
    total = whole_seconds(seconds)
    minutes, rest = divmod(total, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def utc_day(now: float) -> date:
    """The UTC calendar day containing the Unix time `now` (the usage ledger's day)."""
    return datetime.fromtimestamp(now, tz=UTC).date()
