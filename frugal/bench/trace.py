"""A request trace (Azure LLM inference trace CSV) turned into an open-loop replay (pure layer).

The trace has columns TIMESTAMP, ContextTokens, GeneratedTokens. A replay takes a window of
consecutive requests, compresses the time between arrivals by a factor and scales lengths down
so a CPU-only machine can carry it (frugal/bench/traces/README.md): the prompt becomes
`ContextTokens / prompt_divisor` filler words (capped), the output `GeneratedTokens *
output_scale` tokens (capped).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

FILLER = (
    "the quick review of this function shows how the parser reads each line of input and "
    "returns a list of tokens with their offsets so the caller can build a tree"
).split()


@dataclass(frozen=True)
class TraceRequest:
    offset_s: float  # seconds since the trace's first request
    context_tokens: int
    generated_tokens: int


@dataclass(frozen=True)
class TraceScaling:
    """How a trace window becomes a replay; every field is stated in the benchmark's output."""

    compression: float = 10.0  # wall seconds between arrivals = trace seconds / compression
    prompt_divisor: int = 16  # prompt words = ContextTokens / prompt_divisor ...
    prompt_cap: int = 256  # ... at most this many
    output_scale: float = 1.0  # max_tokens = GeneratedTokens * output_scale ...
    output_cap: int = 64  # ... at most this many

    def describe(self) -> str:
        return (
            f"arrivals compressed {self.compression:g}x; prompt = ContextTokens / "
            f"{self.prompt_divisor} filler words (1..{self.prompt_cap}); max_tokens = "
            f"GeneratedTokens x {self.output_scale:g} (1..{self.output_cap})"
        )


@dataclass(frozen=True)
class ReplayRequest:
    at_s: float  # wall seconds after the replay starts
    prompt_words: int
    max_tokens: int


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch (as if UTC) of `2023-11-16 18:17:03.9799600` (7 fraction
    digits, more than datetime parses)."""
    whole, _, fraction = text.strip().partition(".")
    base = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S")
    return (base - datetime(1970, 1, 1)).total_seconds() + float(f"0.{fraction or '0'}")


def parse_trace(lines: Iterable[str]) -> list[TraceRequest]:
    """Rows of the CSV (header included), as offsets from the first request."""
    rows = list(csv.DictReader(lines))
    if not rows:
        return []
    missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(rows[0])
    if missing:
        raise ValueError(f"trace: missing columns {sorted(missing)}")
    times = [parse_timestamp(row["TIMESTAMP"]) for row in rows]
    first = min(times)
    requests = [
        TraceRequest(t - first, int(row["ContextTokens"]), int(row["GeneratedTokens"]))
        for t, row in zip(times, rows, strict=True)
    ]
    return sorted(requests, key=lambda r: r.offset_s)


def busiest_start(requests: Sequence[TraceRequest], count: int) -> int:
    """The index of the first request of the `count` consecutive requests that arrive in
    the shortest time (the trace's busiest slice of that size)."""
    if count <= 1 or count >= len(requests):
        return 0
    spans = (
        (requests[i + count - 1].offset_s - requests[i].offset_s, i)
        for i in range(len(requests) - count + 1)
    )
    return min(spans)[1]


def window(
    requests: Sequence[TraceRequest], start: int | Literal["busiest"], count: int
) -> list[TraceRequest]:
    """`count` consecutive requests from index `start` (or from the busiest slice)."""
    if count < 1:
        raise ValueError("a trace window needs at least one request")
    first = busiest_start(requests, count) if start == "busiest" else start
    if not 0 <= first < len(requests):
        raise ValueError(f"trace start {first} is outside the trace's {len(requests)} requests")
    return list(requests[first : first + count])


def scale(requests: Sequence[TraceRequest], scaling: TraceScaling) -> list[ReplayRequest]:
    """The window as a replay: arrival times from the window's first request, compressed."""
    if not requests:
        return []
    origin = requests[0].offset_s
    return [
        ReplayRequest(
            at_s=(r.offset_s - origin) / scaling.compression,
            prompt_words=_clamp(r.context_tokens // scaling.prompt_divisor, scaling.prompt_cap),
            max_tokens=_clamp(round(r.generated_tokens * scaling.output_scale), scaling.output_cap),
        )
        for r in requests
    ]


def _clamp(value: int, cap: int) -> int:
    return max(1, min(cap, value))


def filler_prompt(words: int) -> str:
    """`words` words of deterministic, content-free text."""
    return " ".join(FILLER[i % len(FILLER)] for i in range(words))
