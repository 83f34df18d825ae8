"""`frugal bench soak`: the full chain under steady load for minutes, memory sampled (I/O).

The sim engines and a full Frugal stack (the `frugal` system of `frugal bench compare`:
key check, quotas, prompt and output checks) start once; a closed loop holds
`concurrency` streams in flight for `duration_s` while every process's RSS and open
descriptors are sampled every `interval_s`. Afterwards the usage ledger is held against
the engines' counters, as compare does. The run passes with zero errors, a ledger that
matches, and no process whose memory or descriptors trend upwards (memory_trend.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from frugal.accounting.token_budget import SETTLED_TTL_S
from frugal.bench.compare import check_stack, shared_engines
from frugal.bench.compare_counters import EngineAttempts
from frugal.bench.compare_fleet import FULL
from frugal.bench.compare_plan import ComparePlan
from frugal.bench.compare_systems import SYSTEMS, SystemContext, SystemRun
from frugal.bench.driver import BenchRequest
from frugal.bench.load import closed_loop, warm_up
from frugal.bench.memory_trend import MemorySample, ProcessTrend, render, trends
from frugal.bench.process_tree import stack_readings
from frugal.bench.progress import ProgressBar
from frugal.bench.stats import LevelSummary, RequestSample, summarise

LOG_NAME = "soak-stack.log"
WARMUP_REQUESTS = 8


@dataclass(frozen=True)
class SoakPlan:
    concurrency: int = 256
    duration_s: float = 600.0
    interval_s: float = 10.0
    # Samples before this are left out of the trends: caches fill, pools open.
    warmup_s: float = 60.0
    max_tokens: int = 64
    replicas: int = 4

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.duration_s <= 0 or self.interval_s <= 0:
            raise ValueError("concurrency, duration and interval must be positive")
        if not 0 <= self.warmup_s < self.duration_s:
            raise ValueError("the warm-up must be shorter than the run")

    def compare_plan(self) -> ComparePlan:
        return ComparePlan(
            systems=(FULL,), levels=(self.concurrency,), duration_s=self.duration_s,
            max_tokens=self.max_tokens, replicas=self.replicas,
        )  # fmt: skip


@dataclass(frozen=True)
class SoakResult:
    summary: LevelSummary
    samples: list[MemorySample]
    trends: list[ProcessTrend]
    ledger: dict[str, Any] | None
    warmup_s: float
    # Redis's keys before and after the load: what its memory grew by is mostly keys
    # that expire (a settled request's marker lives SETTLED_TTL_S, an hour).
    redis_keys: tuple[int | None, int | None] = (None, None)
    # Envoy's attempts abandoned for streams.first_byte_timeout_s during the load, and
    # its retries (None when its admin did not answer).
    attempts: EngineAttempts | None = None
    # When each failed request ended, in seconds from the start of the load.
    error_times_s: tuple[float, ...] = ()

    @property
    def passed(self) -> bool:
        ledger_ok = self.ledger is None or self.ledger.get("matches") is True
        return (
            self.summary.errors == 0
            and self.summary.requests > 0
            and ledger_ok
            and not any(t.grows or t.leaks_fds for t in self.trends)
        )

    def lines(self) -> list[str]:
        s = self.summary
        rate = s.errors / s.requests if s.requests else 0.0
        matches = None if self.ledger is None else self.ledger.get("matches")
        return [
            f"requests {s.requests}, errors {s.errors} (rate {rate:.4%}), "
            f"{s.duration_s:.0f} s, {s.throughput_tok_s:.0f} tok/s, "
            f"TTFT p50 {_ms(s.ttft_p50_ms)} p99 {_ms(s.ttft_p99_ms)}",
            *([f"errors by reason: {s.error_reasons}"] if s.error_reasons else []),
            *([_error_times(self.error_times_s)] if self.error_times_s else []),
            f"ledger equals engines: {matches} ({_totals(self.ledger)})",
            _attempts(self.attempts),
            f"Redis keys before and after the load: {self.redis_keys[0]} -> {self.redis_keys[1]}"
            f" (settled-request markers expire after {SETTLED_TTL_S:.0f} s)",
            f"{len(self.samples)} samples of every process; trends after the first "
            f"{self.warmup_s:g} s:",
            *render(self.trends),
            "PASS" if self.passed else "FAIL",
        ]


def _totals(ledger: dict[str, Any] | None) -> str:
    if ledger is None:
        return "no ledger"
    return f"ledger {ledger.get('ledger')}, engines {ledger.get('engines')}"


def _error_times(times_s: tuple[float, ...]) -> str:
    shown = ", ".join(f"{t:.1f}" for t in times_s[:20])
    more = f" and {len(times_s) - 20} more" if len(times_s) > 20 else ""
    return f"errors ended at (s after the load began): {shown}{more}"


def _attempts(attempts: EngineAttempts | None) -> str:
    if attempts is None:
        return "Envoy's attempt counters: not read"
    return (
        f"attempts Envoy abandoned (no response headers within streams.first_byte_timeout_s): "
        f"{attempts.per_try_timeouts}, retries: {attempts.retries}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


async def _sample(
    samples: list[MemorySample], started: float, interval_s: float, redis_port: int | None
) -> None:
    while True:
        readings = await asyncio.to_thread(stack_readings, None, redis_port)
        samples.append(MemorySample(time.monotonic() - started, readings))
        await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def _sampling(interval_s: float, redis_port: int | None) -> AsyncIterator[list[MemorySample]]:
    samples: list[MemorySample] = []
    task = asyncio.create_task(_sample(samples, time.monotonic(), interval_s, redis_port))
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        last = samples[-1].at_s if samples else 0.0
        samples.append(MemorySample(last, stack_readings(None, redis_port)))


async def _load(plan: SoakPlan, compare: ComparePlan, run: SystemRun) -> SoakResult:
    since = datetime.datetime.now(datetime.UTC).date()
    engines_before = await run.probe.engine_tokens() if run.probe is not None else None
    keys_before = await run.probe.redis_keys() if run.probe is not None else None
    attempts_before = await run.probe.engine_attempts() if run.probe is not None else None
    async with run.make_driver(WARMUP_REQUESTS) as driver:
        await warm_up(driver, WARMUP_REQUESTS)
    prompt = compare.prompt()
    progress = ProgressBar(f"soak c={plan.concurrency}", 0)
    redis_port = urlsplit(run.probe.redis_url).port if run.probe is not None else None
    sampling = _sampling(plan.interval_s, redis_port)
    error_times: list[float] = []
    began = time.monotonic()

    def on_sample(sample: RequestSample) -> None:
        progress.advance(sample)
        if not sample.ok:
            error_times.append(time.monotonic() - began)

    async with run.make_driver(plan.concurrency) as driver, sampling as samples:
        found, duration = await closed_loop(
            driver, plan.concurrency,
            lambda index: BenchRequest(prompt, plan.max_tokens, index),
            on_sample, duration_s=plan.duration_s,
        )  # fmt: skip
    progress.close()
    ledger, keys_after, attempts = None, None, None
    if run.probe is not None:
        keys_after = await run.probe.redis_keys()
        attempts_after = await run.probe.engine_attempts()
        if attempts_before is not None and attempts_after is not None:
            attempts = attempts_after - attempts_before
        check = await check_stack(FULL, compare, run, run.probe, since, engines_before)
        ledger = check.get("ledger")
    summary = summarise(found, duration)
    found_trends = trends(samples, plan.warmup_s)
    return SoakResult(
        summary, samples, found_trends, ledger, plan.warmup_s, (keys_before, keys_after),
        attempts, tuple(error_times),
    )  # fmt: skip


async def run_soak(plan: SoakPlan, out: Path | None = None) -> SoakResult:
    """The soak run; with `out`, writes samples.json and table.md there as well."""
    compare = plan.compare_plan()
    with tempfile.TemporaryDirectory(prefix="frugal-soak-") as scratch:
        root = Path(scratch)
        log_path = (out or root) / LOG_NAME
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w", buffering=1) as log:

            def sink(child: str, line: str) -> None:
                log.write(f"[{child}] {line}\n")

            async with shared_engines(compare, root, log) as engines:
                context = SystemContext(compare, engines, root, sink)
                async with SYSTEMS[FULL].run(context) as run:
                    result = await _load(plan, compare, run)
    if out is not None:
        (out / "samples.json").write_text(
            json.dumps([asdict(sample) for sample in result.samples], indent=1)
        )
        (out / "table.md").write_text("\n".join(result.lines()) + "\n")
    return result
