"""What `frugal bench compare` runs: systems, concurrency levels, the workload (pure layer).

The paper's continuous mode: at concurrency c, c requests in flight and 10 x c requests in
all (at least MIN_REQUESTS, so percentiles of the low levels rest on something), or a fixed
duration per level. Every system sees the same requests against the same engine workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal.bench.compare_fleet import BARE, FULL, NOREDACT, RLS, rate_limit_setting_exists
from frugal.bench.compare_prompts import build_prompt, describe_prompt, words_for_bytes

# In the order they run and appear in the outputs; `fastapi` is the paper's baseline.
SYSTEMS = ("direct", FULL, NOREDACT, RLS, BARE, "fastapi", "litellm")
# frugal-rls sets `safety_filter.rate_limit`, which the config may not know yet: until it
# does, it runs only when asked for (and is skipped, saying why).
DEFAULT_SYSTEMS = tuple(s for s in SYSTEMS if s != RLS or rate_limit_setting_exists())
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
# From here on a run is the long-prompt workload (its targets at 20 and 150 streams).
LONG_PROMPT_BYTES = 100_000


@dataclass(frozen=True)
class ComparePlan:
    systems: tuple[str, ...]
    levels: tuple[int, ...]
    requests_per_stream: int = REQUESTS_PER_STREAM
    min_requests: int = MIN_REQUESTS
    duration_s: float | None = None  # per level, instead of a request count
    max_tokens: int = MAX_TOKENS
    prompt_words: int = PROMPT_WORDS
    prompt_bytes: int | None = None  # instead of prompt_words: about this many bytes
    sensitive: bool = False  # each prompt also carries an email, a phone and a card number
    stream: bool = True
    model: str = DEFAULT_MODEL
    # Engines to measure that are already running (any backend); empty: start sim workers.
    engines: tuple[str, ...] = ()
    replicas: int = DEFAULT_REPLICAS  # sim workers to start when `engines` is empty
    time_scale: float = 1.0  # of the sim workers (simulated ms = wall ms / time_scale)
    timeout_s: float = 300.0
    # safety_filter.processes of every Frugal stack: as frugal.yaml, one per core here.
    safety_processes: int = 2

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
        if self.prompt_words < 1 or (self.prompt_bytes is not None and self.prompt_bytes < 1):
            raise ValueError("prompts must have at least one word or byte")
        if not 1 <= self.safety_processes <= 32:
            raise ValueError("safety_processes must be 1 to 32")

    @property
    def simulated(self) -> bool:
        return not self.engines

    @property
    def long_prompts(self) -> bool:
        return self.prompt_bytes is not None and self.prompt_bytes >= LONG_PROMPT_BYTES

    def words(self) -> int:
        if self.prompt_bytes is None:
            return self.prompt_words
        return words_for_bytes(self.prompt_bytes)

    def prompt(self) -> str:
        """The prompt every request of the run sends."""
        return build_prompt(self.words(), sensitive=self.sensitive)

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
        prompt = describe_prompt(self.words(), self.prompt_bytes, sensitive=self.sensitive)
        processes = f"; {self.safety_processes} safety filter processes per Frugal stack"
        return (
            f"closed loop, {per_level}; {mode} chat completions, {prompt}, max_tokens "
            f"{self.max_tokens}{processes if self.safety_processes > 1 else ''}"
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
