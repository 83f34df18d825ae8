"""What a routing benchmark run does: policies, load levels, trace window (pure layer).

Budget: the default plan keeps a run near 15 minutes on a 2-core machine at time_scale 10
(four policies, each its own stack); the quick plan near 3 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from frugal.bench.fleet import POLICIES
from frugal.bench.trace import TraceScaling

# max_tokens of closed-loop requests, drawn (seeded) from this small fixed distribution.
MAX_TOKENS_CHOICES = (16, 32, 64)


@dataclass(frozen=True)
class LevelPlan:
    concurrency: int
    requests_per_client: int

    @property
    def requests(self) -> int:
        return self.concurrency * self.requests_per_client


@dataclass(frozen=True)
class TracePlan:
    path: Path
    requests: int
    start: int | Literal["busiest"] = 0
    scaling: TraceScaling = field(default_factory=TraceScaling)

    def describe(self) -> str:
        where = "the busiest slice" if self.start == "busiest" else f"request #{self.start}"
        return (
            f"{self.requests} requests of {self.path.name} from {where}; {self.scaling.describe()}"
        )


# Fewer requests per client as concurrency grows: each level then lasts ~15-70 s wall. A
# level's first round (one request a client) arrives at once, routed by the weights its
# idle start left (all on tp8 after a lull), before the balancer's first tick can move
# them; the high levels get enough rounds after it that a run measures the policy, not only
# that burst (at 256 x 2 half the requests were in it: adaptive / static-tp2 0.92, against
# 1.07 at 256 x 6, frugal bench routing --levels 256 on b9563e7).
DEFAULT_LEVELS = (
    LevelPlan(1, 8),
    LevelPlan(4, 6),
    LevelPlan(16, 4),
    LevelPlan(64, 3),
    LevelPlan(128, 4),
    LevelPlan(256, 6),
)
QUICK_LEVELS = (LevelPlan(1, 3), LevelPlan(16, 2), LevelPlan(64, 1))
# The default window is the trace's first 600 requests (~262 s of trace, ~26 s wall at 10x:
# a burst, a 140 s lull, then bursts of up to ~13 req/s). The quick one skips the lull:
# requests 60..179 arrive within ~20 s of trace, ~2 s wall at 10x, a burst on its own.
DEFAULT_TRACE_REQUESTS = 600
DEFAULT_TRACE_START = 0
QUICK_TRACE_REQUESTS = 120
QUICK_TRACE_START = 60


@dataclass(frozen=True)
class RoutingPlan:
    policies: tuple[str, ...]
    levels: tuple[LevelPlan, ...]
    trace: TracePlan | None
    time_scale: float = 10.0

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; known: {sorted(POLICIES)}")
        if not self.policies:
            raise ValueError("no policy to run")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")


def levels_from(
    concurrencies: list[int] | None, requests_per_client: int | None, *, quick: bool
) -> tuple[LevelPlan, ...]:
    """The default or quick levels, or the given concurrencies; a fixed requests-per-client
    count, when given, replaces the defaults' per-level counts."""
    base = QUICK_LEVELS if quick else DEFAULT_LEVELS
    per_level = {level.concurrency: level.requests_per_client for level in base}
    chosen = concurrencies or [level.concurrency for level in base]
    if any(c < 1 for c in chosen):
        raise ValueError("concurrency levels must be positive")
    return tuple(
        LevelPlan(c, requests_per_client or per_level.get(c, 2)) for c in sorted(set(chosen))
    )
