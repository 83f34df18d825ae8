"""When open-loop requests are sent: Poisson or Gamma arrivals (pure layer).

Gamma arrivals with a coefficient of variation above 1 are burstier than Poisson (cv = 1 is
Poisson); vLLM's and the paper's serving benchmarks use the same two processes.
"""

from __future__ import annotations

import random
from itertools import accumulate


def poisson_offsets(rate: float, count: int, rng: random.Random) -> list[float]:
    """Send times (s from the start) of `count` requests arriving at `rate` per second."""
    return gamma_offsets(rate, 1.0, count, rng)


def gamma_offsets(rate: float, cv: float, count: int, rng: random.Random) -> list[float]:
    """Inter-arrival gaps drawn from Gamma(shape 1/cv^2) with mean 1/rate; the first
    request is sent at 0."""
    if rate <= 0 or cv <= 0:
        raise ValueError("the arrival rate and its cv must be positive")
    if count < 1:
        return []
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    gaps = [rng.gammavariate(shape, scale) for _ in range(count - 1)]
    return [0.0, *accumulate(gaps)]
