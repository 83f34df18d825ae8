"""Per-request samples and their summary statistics (pure layer: no I/O)."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestSample:
    """What one request gave: times in wall milliseconds, None when not measured."""

    ok: bool
    ttft_ms: float | None = None
    # Time between tokens from the gaps between content events (driver.time_between_tokens;
    # None with < 2 events).
    tbt_ms: float | None = None
    tokens: int = 0
    e2e_ms: float | None = None
    # The engine's own time for the request, as the worker reported it (x-frugal-engine-ms).
    engine_ms: float | None = None
    timed_out: bool = False
    # Why it failed: "http 503 service_unavailable" (status and the OpenAI error's code),
    # "error event upstream_timeout", "no [DONE]", "timeout", "transport: ...".
    error: str = ""

    @property
    def gateway_ms(self) -> float | None:
        """End-to-end minus engine time: what the path in front of the engine added (the
        paper's Figure 6 split). None unless both are known."""
        if self.e2e_ms is None or self.engine_ms is None:
            return None
        return self.e2e_ms - self.engine_ms


@dataclass(frozen=True)
class LevelSummary:
    """One load level (a concurrency or the trace replay) of one system, in wall units."""

    requests: int
    errors: int
    tokens: int
    duration_s: float
    throughput_tok_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tbt_p50_ms: float | None
    ttft_p90_ms: float | None = None
    tbt_p90_ms: float | None = None
    tbt_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p90_ms: float | None = None
    e2e_p99_ms: float | None = None
    requests_per_s: float = 0.0
    timeouts: int = 0
    gateway_ms_p50: float | None = None
    engine_ms_p50: float | None = None
    error_reasons: dict[str, int] = field(default_factory=dict)


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


def _known(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def summarise(samples: Sequence[RequestSample], duration_s: float) -> LevelSummary:
    """Throughput counts the tokens of successful requests over the level's wall duration;
    latencies are over successful requests only (errors are counted, not timed). A timeout
    is an error too."""
    good = [s for s in samples if s.ok]
    ttfts = _known([s.ttft_ms for s in good])
    tbts = _known([s.tbt_ms for s in good])
    e2es = _known([s.e2e_ms for s in good])
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
        ttft_p90_ms=percentile(ttfts, 90),
        tbt_p90_ms=percentile(tbts, 90),
        tbt_p99_ms=percentile(tbts, 99),
        e2e_p50_ms=percentile(e2es, 50),
        e2e_p90_ms=percentile(e2es, 90),
        e2e_p99_ms=percentile(e2es, 99),
        requests_per_s=len(good) / duration_s if duration_s > 0 else 0.0,
        timeouts=sum(s.timed_out for s in samples),
        gateway_ms_p50=percentile(_known([s.gateway_ms for s in good]), 50),
        engine_ms_p50=percentile(_known([s.engine_ms for s in good]), 50),
        error_reasons=dict(Counter(s.error or "unknown" for s in samples if not s.ok)),
    )
