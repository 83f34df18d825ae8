"""Per-request samples and their summary statistics (pure layer: no I/O)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestSample:
    """What one streamed request gave: times in wall milliseconds, None when not measured."""

    ok: bool
    ttft_ms: float | None = None
    # Mean gap between consecutive content chunks of this request (None with < 2 chunks).
    tbt_ms: float | None = None
    tokens: int = 0


@dataclass(frozen=True)
class LevelSummary:
    """One load level (a concurrency or the trace replay) of one policy, in wall units."""

    requests: int
    errors: int
    tokens: int
    duration_s: float
    throughput_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tbt_p50_ms: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linearly interpolated between closest ranks (numpy's
    default method); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(samples: Sequence[RequestSample], duration_s: float) -> LevelSummary:
    """Throughput counts the tokens of successful requests over the level's wall duration;
    latencies are over successful requests only (errors are counted, not timed)."""
    good = [s for s in samples if s.ok]
    ttfts = [s.ttft_ms for s in good if s.ttft_ms is not None]
    tbts = [s.tbt_ms for s in good if s.tbt_ms is not None]
    tokens = sum(s.tokens for s in good)
    return LevelSummary(
        requests=len(samples),
        errors=len(samples) - len(good),
        tokens=tokens,
        duration_s=duration_s,
        throughput_tok_s=tokens / duration_s if duration_s > 0 else 0.0,
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p99_ms=percentile(ttfts, 99),
        tbt_p50_ms=statistics.median(tbts) if tbts else None,
    )
