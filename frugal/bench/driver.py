"""What a load generator sends, and the one interface every system under test is driven by.

Pure layer. A driver turns a `BenchRequest` into a `RequestSample`: the OpenAI HTTP API of
a gateway (http_driver.py) or the engines' gRPC API with no gateway at all (grpc_driver.py).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from frugal.bench.stats import RequestSample


@dataclass(frozen=True)
class BenchRequest:
    prompt: str
    max_tokens: int
    # None: not sent (a real model's engine may refuse a per-request seed).
    seed: int | None
    temperature: float | None = None

    def sampling(self) -> dict[str, float | int]:
        """The sampling fields to send: those that are set."""
        fields = {"seed": self.seed, "temperature": self.temperature}
        return {name: value for name, value in fields.items() if value is not None}


class Driver(Protocol):
    async def send(self, request: BenchRequest, started: float | None = None) -> RequestSample:
        """One chat completion. `started` (perf_counter) is when the request was due, so an
        open-loop client that falls behind does not hide queueing from TTFT."""
        ...


def time_between_tokens(arrivals: Sequence[float], tokens: int) -> float | None:
    """Ms per output token, from the gaps actually observed between content events: their
    mean, less the shortest gap when there are two or more, over the whole tokens an event
    carries (tokens // events, at least 1).

    An output filter's hold-back cannot flatter it. Holding the first token back and
    sending it with the next drops a gap without shortening the others; flushing the held
    tail when the answer ends adds one near-zero gap, the shortest, which is left out; an
    event that carries a few held tokens lengthens its gap, and the whole-number division
    does not count the extra tokens. First-to-last time over tokens - 1 read such a stream
    2 % fast at 64 tokens. A proxy that delivers in bursts keeps its long gaps in the mean.
    """
    if len(arrivals) < 2:
        return None
    gaps = sorted(later - earlier for earlier, later in itertools.pairwise(arrivals))
    kept = gaps[1:] if len(gaps) > 1 else gaps
    per_event = max(1, tokens // len(arrivals))
    return statistics.fmean(kept) * 1000 / per_event


def streamed_sample(
    start: float,
    end: float,
    arrivals: list[float],
    tokens: int | None,
    engine_ms: float | None = None,
) -> RequestSample:
    """A stream that ended well, from the arrival times (perf_counter s) of its content
    chunks; `tokens` from its usage where it reported one, else one per chunk."""
    if not arrivals:
        return RequestSample(ok=False, error="no content")
    count = tokens or len(arrivals)
    return RequestSample(
        ok=True,
        ttft_ms=(arrivals[0] - start) * 1000,
        tbt_ms=time_between_tokens(arrivals, count),
        tokens=count,
        e2e_ms=(end - start) * 1000,
        engine_ms=engine_ms,
    )


def parse_engine_ms(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
