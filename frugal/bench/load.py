"""Load loops over any driver (I/O layer: asyncio).

Closed loop (the paper's "continuous" mode): `concurrency` requests in flight, each client
sending its next request as soon as the last one ends, until `total` requests were sent or
`duration_s` ran out. Open loop: requests sent at scheduled times whatever the answers,
TTFT counted from the scheduled time (so a client that falls behind does not hide queueing).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence

import httpx

from frugal.bench.driver import BenchRequest, Driver
from frugal.bench.stats import RequestSample

RequestFactory = Callable[[int], BenchRequest]  # request index -> request
SampleSink = Callable[[RequestSample], None]


async def closed_loop(
    driver: Driver,
    concurrency: int,
    make_request: RequestFactory,
    on_sample: SampleSink,
    *,
    total: int | None = None,
    duration_s: float | None = None,
) -> tuple[list[RequestSample], float]:
    """(samples, wall seconds). Stops at `total` requests or after `duration_s`, whichever
    comes first (requests under way then are let finish)."""
    if total is None and duration_s is None:
        raise ValueError("a closed loop needs a request count or a duration")
    samples: list[RequestSample] = []
    indices = itertools.count()
    started = time.perf_counter()
    deadline = None if duration_s is None else started + duration_s

    async def client() -> None:
        while True:
            index = next(indices)
            if total is not None and index >= total:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            sample = await driver.send(make_request(index))
            samples.append(sample)
            on_sample(sample)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


async def open_loop(
    driver: Driver, schedule: Sequence[tuple[float, BenchRequest]], on_sample: SampleSink
) -> tuple[list[RequestSample], float]:
    """Each request sent `at_s` after the start; (samples, wall seconds from the start to
    the last answer)."""
    samples: list[RequestSample] = []
    origin = time.perf_counter()

    async def send(at_s: float, request: BenchRequest) -> None:
        due = origin + at_s
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sample = await driver.send(request, due)
        samples.append(sample)
        on_sample(sample)

    await asyncio.gather(*(send(at_s, request) for at_s, request in schedule))
    return samples, time.perf_counter() - origin


async def warm_up(driver: Driver, requests: int) -> None:
    """A few short concurrent requests, so connections to the engines exist before anything
    is timed; their outcome does not matter."""
    await asyncio.gather(
        *(driver.send(BenchRequest("warm up", 2, index)) for index in range(requests))
    )


async def envoy_stats(admin_url: str) -> str:
    """Envoy's admin /stats page (plain text), filtered to upstream request counters."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(admin_url + "/stats", params={"filter": "upstream_rq_total"})
        response.raise_for_status()
        return response.text
