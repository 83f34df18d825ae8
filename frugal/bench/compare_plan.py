"""What `frugal bench compare` runs: systems, concurrency levels, the workload (pure layer).

The paper's continuous mode: at concurrency c, c requests in flight and 10 x c requests in
all (at least MIN_REQUESTS, so percentiles of the low levels rest on something), or a fixed
duration per level. Every system sees the same requests against the same engine workers.
"""

from __future__ import annotations

from dataclasses import dataclass

# In the order they run and appear in the outputs; `fastapi` is the paper's baseline.
SYSTEMS = ("direct", "frugal", "frugal-bare", "fastapi", "litellm")
BASELINE = "fastapi"
DEFAULT_LEVELS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
QUICK_LEVELS = (1, 16, 64)
REQUESTS_PER_STREAM = 10
QUICK_REQUESTS_PER_STREAM = 3
MIN_REQUESTS = 20
QUICK_MIN_REQUESTS = 8
MAX_TOKENS = 64
QUICK_MAX_TOKENS = 32
PROMPT_WORDS = 64
DEFAULT_REPLICAS = 4
DEFAULT_MODEL = "sim-bench"


@dataclass(frozen=True)
class ComparePlan:
    systems: tuple[str, ...]
    levels: tuple[int, ...]
    requests_per_stream: int = REQUESTS_PER_STREAM
    min_requests: int = MIN_REQUESTS
    duration_s: float | None = None  # per level, instead of a request count
    max_tokens: int = MAX_TOKENS
    prompt_words: int = PROMPT_WORDS
    stream: bool = True
    model: str = DEFAULT_MODEL
    # Engines to measure that are already running (any backend); empty: start sim workers.
    engines: tuple[str, ...] = ()
    replicas: int = DEFAULT_REPLICAS  # sim workers to start when `engines` is empty
    time_scale: float = 1.0  # of the sim workers (simulated ms = wall ms / time_scale)
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {list(SYSTEMS)}")
        if not self.systems:
            raise ValueError("no system to run")
        if not self.levels or any(c < 1 for c in self.levels):
            raise ValueError("concurrency levels must be positive")
        if self.max_tokens < 2:
            raise ValueError("max_tokens must be at least 2 (time between tokens needs two)")
        if self.time_scale <= 0 or self.replicas < 1:
            raise ValueError("time_scale and replicas must be positive")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be positive")

    @property
    def simulated(self) -> bool:
        return not self.engines

    def requests_at(self, concurrency: int) -> int:
        """Requests a level sends (the cap of a duration-bound level)."""
        if self.duration_s is not None:
            return 0
        return max(concurrency * self.requests_per_stream, self.min_requests)

    def describe(self) -> str:
        per_level = (
            f"{self.duration_s:g} s per level"
            if self.duration_s is not None
            else f"{self.requests_per_stream} x concurrency requests per level "
            f"(at least {self.min_requests})"
        )
        mode = "streamed" if self.stream else "unary"
        return (
            f"closed loop, {per_level}; {mode} chat completions, {self.prompt_words}-word "
            f"prompt, max_tokens {self.max_tokens}"
        )


def plan_for(
    systems: tuple[str, ...], levels: tuple[int, ...] | None, *, quick: bool, **fields: object
) -> ComparePlan:
    """The default or quick plan, with the given fields laid over it."""
    base: dict[str, object] = {
        "levels": levels or (QUICK_LEVELS if quick else DEFAULT_LEVELS),
        "requests_per_stream": QUICK_REQUESTS_PER_STREAM if quick else REQUESTS_PER_STREAM,
        "min_requests": QUICK_MIN_REQUESTS if quick else MIN_REQUESTS,
        "max_tokens": QUICK_MAX_TOKENS if quick else MAX_TOKENS,
    }
    chosen = {**base, **{k: v for k, v in fields.items() if v is not None}}
    return ComparePlan(systems=systems, **chosen)  # type: ignore[arg-type]
