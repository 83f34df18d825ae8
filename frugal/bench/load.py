"""Load generators over the public OpenAI API (I/O layer: httpx).

Closed loop: N clients, each streaming its requests back to back. Open loop: requests sent at
a trace's arrival times whatever the answers, TTFT counted from the scheduled time (so a
client that falls behind does not hide queueing). Every request is a streamed chat
completion; TTFT is to the first content chunk and TBT is the mean gap between content chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from frugal.bench.plan import MAX_TOKENS_CHOICES
from frugal.bench.stats import RequestSample
from frugal.bench.trace import ReplayRequest, filler_prompt

CLOSED_LOOP_PROMPT = filler_prompt(64)
REQUEST_TIMEOUT_S = 600.0


class Progress:
    """`label: done/total requests` on stderr, at most once a second and once at the end."""

    def __init__(self, label: str, total: int, interval_s: float = 1.0) -> None:
        self._label = label
        self._total = total
        self._interval_s = interval_s
        self._done = 0
        self._errors = 0
        self._last = 0.0

    def advance(self, sample: RequestSample) -> None:
        self._done += 1
        self._errors += not sample.ok
        now = time.monotonic()
        if now - self._last >= self._interval_s or self._done == self._total:
            self._last = now
            errors = f", {self._errors} errors" if self._errors else ""
            print(
                f"{self._label}: {self._done}/{self._total} requests{errors}",
                file=sys.stderr,
                flush=True,
            )


@dataclass(frozen=True)
class Target:
    base_url: str
    headers: dict[str, str]
    model: str


def _content_of(event: dict[str, object]) -> bool:
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    delta = choices[0].get("delta")
    return isinstance(delta, dict) and bool(delta.get("content"))


async def stream_chat(
    client: httpx.AsyncClient,
    target: Target,
    prompt: str,
    max_tokens: int,
    seed: int,
    started: float | None = None,
) -> RequestSample:
    """One streamed chat completion. Errors: a non-200 status, an error event, a stream
    without `data: [DONE]`, or a transport error. `started` (perf_counter) is when the
    request was due, for open-loop TTFT."""
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "seed": seed,
        "stream": True,
    }
    start = time.perf_counter() if started is None else started
    arrivals: list[float] = []
    done = False
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return RequestSample(ok=False)
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return RequestSample(ok=False)
                    if _content_of(event):
                        arrivals.append(time.perf_counter())
    except (httpx.HTTPError, json.JSONDecodeError):
        return RequestSample(ok=False)
    if not done or not arrivals:
        return RequestSample(ok=False)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    return RequestSample(
        ok=True,
        ttft_ms=(arrivals[0] - start) * 1000,
        tbt_ms=statistics.fmean(gaps) if gaps else None,
        # The sim sends one token per content chunk (no output filter with enforce off).
        tokens=len(arrivals),
    )


def _client(target: Target, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
    return httpx.AsyncClient(
        base_url=target.base_url, headers=target.headers, limits=limits, timeout=timeout
    )


async def closed_loop(
    target: Target,
    concurrency: int,
    requests_per_client: int,
    on_sample: Callable[[RequestSample], None],
    seed: int = 0,
) -> tuple[list[RequestSample], float]:
    """`concurrency` clients, each sending `requests_per_client` requests back to back over
    a keep-alive pool of `concurrency` HTTP/1.1 connections; (samples, wall seconds)."""
    samples: list[RequestSample] = []
    async with _client(target, concurrency) as client:

        async def run_client(index: int) -> None:
            rng = random.Random(seed * 100_003 + index)
            for round_ in range(requests_per_client):
                max_tokens = rng.choice(MAX_TOKENS_CHOICES)
                request_seed = index * 1000 + round_
                sample = await stream_chat(
                    client, target, CLOSED_LOOP_PROMPT, max_tokens, request_seed
                )
                samples.append(sample)
                on_sample(sample)

        started = time.perf_counter()
        await asyncio.gather(*(run_client(i) for i in range(concurrency)))
        return samples, time.perf_counter() - started


async def open_loop(
    target: Target,
    replay: Sequence[ReplayRequest],
    on_sample: Callable[[RequestSample], None],
    max_connections: int = 1024,
) -> tuple[list[RequestSample], float]:
    """Each request sent at its `at_s` after the start; (samples, wall seconds from the start
    to the last answer)."""
    samples: list[RequestSample] = []
    async with _client(target, min(max_connections, max(1, len(replay)))) as client:
        origin = time.perf_counter()

        async def send(index: int, request: ReplayRequest) -> None:
            due = origin + request.at_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            prompt = filler_prompt(request.prompt_words)
            sample = await stream_chat(client, target, prompt, request.max_tokens, index, due)
            samples.append(sample)
            on_sample(sample)

        await asyncio.gather(*(send(i, r) for i, r in enumerate(replay)))
        return samples, time.perf_counter() - origin


async def warm_up(target: Target, requests: int) -> None:
    """A few short concurrent requests, so Envoy's connections to the engines exist before
    anything is timed; their outcome does not matter."""
    async with _client(target, requests) as client:
        await asyncio.gather(
            *(stream_chat(client, target, "warm up", 2, index) for index in range(requests))
        )


async def envoy_stats(admin_url: str) -> str:
    """Envoy's admin /stats page (plain text), filtered to upstream request counters."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(admin_url + "/stats", params={"filter": "upstream_rq_total"})
        response.raise_for_status()
        return response.text
