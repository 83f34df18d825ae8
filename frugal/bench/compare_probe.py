"""Readings of a running Frugal stack for `frugal bench compare` (I/O layer: /proc, Envoy's
admin, Redis, the engines' /metrics).

A `StackProbe` reads, at one moment: the CPU time of every child the stack's Supervisor
started (utime + stime from /proc/PID/stat, by kind: safety filter processes, Envoy, the
control plane, Redis), Envoy's counters of the messages it sent the safety filter, and
Redis's command and read counters. Watched idle for a while, it gives the background CPU
of each kind, which a level's CPU per request leaves out. compare_counters.py turns two
readings into a level's figures. Over a whole run it also reads the engines' token
counters and the usage ledger, and it finds what a request costs before it reaches an
engine (`round_trips`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from frugal.accounting import read_usage
from frugal.bench.compare_counters import (
    ENGINE_ATTEMPTS_FILTER,
    ENVOY_STATS_FILTER,
    PROCESS_KINDS,
    EngineAttempts,
    EngineTokens,
    EnvoyCounts,
    ProbeDelta,
    RedisCounts,
    RoundTrips,
    StackReading,
    cpu_ticks,
    engine_attempts,
    engine_tokens,
    envoy_counts,
    extproc_turns,
    idle_rates,
    median_round_trips,
    process_kind,
    redis_counts,
    without_reading,
)
from frugal.bench.driver import BenchRequest, Driver
from frugal.bench.stats import RequestSample
from frugal.cli.supervisor import Supervisor
from frugal.wire import engine_metrics_port

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROBE_REQUESTS = 5
SETTLE_S = 0.3  # after a probe request: its settlement reaches Redis
BACKGROUND_S = 2.0  # how long Redis is watched for the stack's own round trips
IDLE_S = 3.0  # how long an idle stack is watched for its background CPU (10 ms ticks)
LEDGER_WAIT_S = 5.0
_POLL_S = 0.0005


@dataclass(frozen=True)
class StackAddresses:
    envoy_admin_url: str
    redis_url: str
    engines: tuple[str, ...]
    key_id: str | None  # the benchmark's key; None: the chain is off, nothing is charged
    safety_metrics: tuple[str, ...] = ()  # /metrics URLs of the safety filter processes


def _ticks(pid: int) -> int | None:
    try:
        return cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, IndexError, ValueError):
        return None  # gone, or not Linux


class StackProbe:
    def __init__(self, supervisor: Supervisor, addresses: StackAddresses) -> None:
        self._supervisor = supervisor
        self._at = addresses
        self._http = httpx.AsyncClient(timeout=5.0)
        self._redis = aioredis.Redis.from_url(addresses.redis_url, single_connection_client=True)

    async def __aenter__(self) -> StackProbe:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._http.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    @property
    def redis_url(self) -> str:
        return self._at.redis_url

    async def redis_keys(self) -> int | None:
        """How many keys Redis holds (DBSIZE); None when it cannot be asked."""
        try:
            return int(await self._redis.dbsize())
        except (RedisError, OSError):
            return None

    @property
    def charges(self) -> bool:
        return self._at.key_id is not None

    def _cpu(self) -> tuple[dict[str, int], dict[str, int]]:
        ticks = dict.fromkeys(PROCESS_KINDS, 0)
        processes = dict.fromkeys(PROCESS_KINDS, 0)
        for name, child in self._supervisor.children.items():
            kind = process_kind(name)
            value = _ticks(child.process.pid) if kind in ticks else None
            if value is not None:
                ticks[kind] += value
                processes[kind] += 1
        return ticks, processes

    async def _envoy(self) -> EnvoyCounts:
        response = await self._http.get(
            self._at.envoy_admin_url + "/stats", params={"filter": ENVOY_STATS_FILTER}
        )
        response.raise_for_status()
        return envoy_counts(response.text)

    async def engine_attempts(self) -> EngineAttempts | None:
        """Envoy's per-try timeouts and retries towards the engines so far; None when its
        admin does not answer."""
        try:
            response = await self._http.get(
                self._at.envoy_admin_url + "/stats", params={"filter": ENGINE_ATTEMPTS_FILTER}
            )
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        return engine_attempts(response.text)

    async def _turns(self) -> int:
        """The safety filter's request-side or response-side turns so far (both, summed
        by side, are read; the caller takes differences)."""
        texts = []
        for url in self._at.safety_metrics:
            with contextlib.suppress(httpx.HTTPError):
                texts.append((await self._http.get(url)).text)
        turns = extproc_turns(texts)
        return turns["request"] + turns["response"]

    async def _redis_counts(self) -> RedisCounts | None:
        try:
            return redis_counts(await self._redis.info("stats", "commandstats"))
        except (RedisError, OSError):
            return None

    async def reading(self) -> StackReading:
        envoy = await self._envoy()
        redis = await self._redis_counts()
        ticks, processes = self._cpu()
        return StackReading(ticks, processes, envoy, redis, time.monotonic())

    async def idle_rates(self, seconds: float = IDLE_S) -> dict[str, float]:
        """Ticks per second each kind spends while no request is under way."""
        before = await self.reading()
        await asyncio.sleep(seconds)
        return idle_rates(before, await self.reading())

    async def engine_tokens(self) -> EngineTokens | None:
        """Prompt and generated tokens the engines have counted since they started; None
        when one of them does not answer (the counts would be short)."""
        texts = []
        for address in self._at.engines:
            host, _, port = address.rpartition(":")
            url = f"http://{host}:{engine_metrics_port(int(port))}/metrics"
            try:
                response = await self._http.get(url)
                response.raise_for_status()
            except httpx.HTTPError:
                return None
            texts.append(response.text)
        return engine_tokens(texts)

    async def ledger_tokens(self, since: datetime.date) -> EngineTokens | None:
        """What the usage ledger charged the benchmark's key, from `since` to today (UTC)."""
        if self._at.key_id is None:
            return None
        today = datetime.datetime.now(datetime.UTC).date()
        rows = []
        try:
            for day in {since, today}:
                rows += await read_usage(self._redis, self._at.key_id, day)
        except (RedisError, OSError):
            return None
        return EngineTokens(
            sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows)
        )

    async def settled_ledger(
        self, since: datetime.date, engines: EngineTokens | None
    ) -> EngineTokens | None:
        """The ledger once it holds what the engines counted, or as it is after
        LEDGER_WAIT_S (settlements may still be on their way when the last answer ends)."""
        deadline = time.monotonic() + LEDGER_WAIT_S
        while True:
            ledger = await self.ledger_tokens(since)
            if ledger == engines or ledger is None or time.monotonic() > deadline:
                return ledger
            await asyncio.sleep(0.2)

    async def _at_engine(
        self, engine_requests: int, answer: asyncio.Task[RequestSample]
    ) -> tuple[EnvoyCounts, RedisCounts | None, int] | None:
        """Readings taken as soon as Envoy has started the request towards an engine:
        everything before the engine is done, nothing after it has begun (the first token
        takes at least one engine step). None if the answer came first."""
        while not answer.done():
            envoy = await self._envoy()
            if envoy.engine_requests > engine_requests:
                return envoy, await self._redis_counts(), await self._turns()
            await asyncio.sleep(_POLL_S)
        return None

    async def round_trips(
        self, driver: Driver, request: BenchRequest, count: int = PROBE_REQUESTS
    ) -> tuple[RoundTrips, RoundTrips] | None:
        """(before the engine, after it): Python and Redis round trips of one request, the
        median over `count` requests sent one at a time. Redis round trips the stack makes
        with no request under way (cache refreshes, the control plane) are watched first,
        and their rate times each window is left out."""
        background = await self._redis_rate(BACKGROUND_S)
        before: list[ProbeDelta] = []
        after: list[ProbeDelta] = []
        for _ in range(count):
            envoy0, redis0, turns0 = (
                await self._envoy(),
                await self._redis_counts(),
                await self._turns(),
            )
            started = time.monotonic()
            answer = asyncio.create_task(driver.send(request))
            middle = await self._at_engine(envoy0.engine_requests, answer)
            at_engine = time.monotonic()
            sample = await answer
            await asyncio.sleep(SETTLE_S)
            envoy2, redis2, turns2 = (
                await self._envoy(),
                await self._redis_counts(),
                await self._turns(),
            )
            ended = time.monotonic()
            if middle is None or not sample.ok:
                continue
            envoy1, redis1, turns1 = middle
            redis_before = _less(_delta(redis1, redis0), background * (at_engine - started))
            redis_after = _less(_delta(redis2, redis1), background * (ended - at_engine))
            before.append(ProbeDelta(envoy1 - envoy0, redis_before, turns1 - turns0))
            after.append(ProbeDelta(envoy2 - envoy1, redis_after, turns2 - turns1))
        if not before:
            return None
        return median_round_trips(before), median_round_trips(after)

    async def _redis_rate(self, seconds: float) -> float:
        """Redis round trips per second with no request under way (the readings' own left
        out)."""
        first = await self._redis_counts()
        await asyncio.sleep(seconds)
        delta = _delta(await self._redis_counts(), first)
        return 0.0 if delta is None else delta.round_trips / seconds


def _less(counts: RedisCounts | None, background: float) -> RedisCounts | None:
    """`counts` less the round trips the stack would have made anyway (rounded: a window
    holds whole round trips)."""
    if counts is None:
        return None
    return RedisCounts(counts.commands, max(0, counts.round_trips - round(background)))


def _delta(later: RedisCounts | None, earlier: RedisCounts | None) -> RedisCounts | None:
    if later is None or earlier is None:
        return None
    return without_reading(later - earlier)
